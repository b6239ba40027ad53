"""Spacing-aware inference and training: cases resampled to the trained spacing, probabilities back.

The last test is the issue's acceptance check on the shipped model: one generated head stored at
0.40, 0.45, 0.55 and 0.9 mm pixels gives the same bleed volume (within 10 %) and masks that agree
(Dice ≥ 0.9) once brought to a common grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn

from model.postprocess import postprocess
from model.predictor import EnsemblePredictor
from model.spacing import parse_spacing, resize, slab_average, slab_kernel, target_shape, to_spacing, voxel_ml
from model.weights import Manifest, WeightsError, load_manifest, load_models
from tests.conftest import ct_image, head_volume
from training.data import cache_case
from training.splits import TrainCase

CPU = torch.device("cpu")
WEIGHTS = Path(__file__).resolve().parents[1] / "weights"


def test_target_shape_keeps_the_field_of_view_and_skips_tiny_differences():
    assert target_shape((30, 512, 512), (5.0, 0.45, 0.45), (None, 0.9, 0.9)) == (30, 256, 256)
    assert target_shape((30, 512, 512), (5.0, 0.9, 0.9), (None, 0.9, 0.9)) == (30, 512, 512)
    assert target_shape((30, 500, 500), (5.0, 0.905, 0.905), (None, 0.9, 0.9)) == (30, 500, 500)  # within 2 %
    assert target_shape((20, 100, 80), (5.0, 1.8, 0.9), (2.5, 0.9, 0.9)) == (40, 200, 80)
    with pytest.raises(ValueError, match="spacing_zyx"):
        parse_spacing([0.9, 0.9])
    with pytest.raises(ValueError, match="spacing_zyx"):
        parse_spacing([None, -1.0, 0.9])


def test_resize_preserves_a_constant_and_the_mean_of_a_smooth_image():
    flat = torch.full((3, 40, 60), 35.0)
    assert torch.allclose(resize(flat, (3, 20, 30)), flat[:, :20, :30])
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    ramp = (yy + xx)[None].repeat(2, 1, 1)
    down = resize(ramp, (2, 32, 32))
    assert abs(float(down.mean()) - float(ramp.mean())) < 1e-3
    assert resize(down, (2, 64, 64)).shape == (2, 64, 64)
    assert to_spacing(np.zeros((2, 8, 8), np.float32), (5.0, 0.9, 0.9), None).shape == (2, 8, 8)


def test_thin_slices_are_averaged_over_the_slab_and_thick_ones_kept():
    assert slab_kernel(5.0, 1.25) == pytest.approx([0.125, 0.25, 0.25, 0.25, 0.125])
    assert slab_kernel(5.0, 2.0) == pytest.approx([0.3, 0.4, 0.3])
    assert slab_kernel(5.0, 0.957).sum() == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    thin = (30.0 + 10.0 * rng.standard_normal((40, 32, 32))).astype(np.float32)
    thin[20] += 40.0  # one bright 1.25 mm slice: a quarter of it is left in a 5 mm slab
    assert slab_average(thin, 3.0, 5.0) is not thin  # 3 mm: averaged ([0.2, 0.6, 0.2])
    slab = slab_average(thin, 1.25, 5.0)
    assert slab.shape == thin.shape and slab.dtype == np.float32
    assert float(slab[5:15].std()) == pytest.approx(10.0 * np.sqrt(0.21875), rel=0.1)  # sqrt(sum w²) of the noise
    assert float(slab[20].mean()) == pytest.approx(30.0 + 0.25 * 40.0, abs=1.0)
    assert float(slab.mean()) == pytest.approx(float(thin.mean()), abs=0.05)  # averaging keeps the HU
    for dz, slab_mm in ((5.0, 5.0), (6.0, 5.0), (4.0, 5.0), (3.5, 5.0), (1.25, None)):
        assert slab_average(thin, dz, slab_mm) is thin
    one = thin[:1]
    assert slab_average(one, 1.25, 5.0) is one  # a single slice: nothing to average with


class Recorder(nn.Module):
    """Logit positive for 50–90 HU (from the [−20, 180] window); records the in-plane sizes it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[int, int]] = []
        self.bias = nn.Parameter(torch.zeros(1))

    def shape_factor(self) -> tuple[int, int]:
        return (1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(tuple(x.shape[-2:]))
        hu = x[:, 1:2] * 200.0 - 20.0
        return torch.minimum(hu - 50.0, 90.0 - hu) + self.bias


def manifest(spacing: list | None, slab_mm: float | None = None) -> Manifest:
    inference = {"crop_margin": 64} | ({"spacing_zyx": spacing} if spacing else {}) | \
        ({"slab_mm": slab_mm} if slab_mm else {})
    return Manifest.from_dict({"family": "segresnet2d", "input_mode": "windows3",
                               "folds": [{"file": "-", "sha256": "-"}], "inference": inference})


def test_predictor_runs_at_the_trained_spacing_and_answers_on_the_input_grid():
    hu = head_volume((6, 96, 80)).astype(np.float32)
    plain = EnsemblePredictor([Recorder()], manifest(None), CPU)(hu, (5.0, 0.45, 0.45))
    predictor = EnsemblePredictor([Recorder()], manifest([None, 0.9, 0.9]), CPU)
    coarse = predictor(hu, (5.0, 0.45, 0.45))
    assert coarse.shape == hu.shape
    sizes = list(predictor.models[0].sizes)
    assert sizes and max(h for h, _ in sizes) <= 48 and max(w for _, w in sizes) <= 40  # half the pixels
    inside = (slice(None), slice(30, 50), slice(18, 42))  # the bleed and brain around it, away from the skull
    bleed = int((plain[inside] > 0.5).sum())
    assert bleed > 500 and abs(int((coarse[inside] > 0.5).sum()) - bleed) <= 0.1 * bleed
    predictor(hu, (5.0, 0.9, 0.9))  # already at the trained spacing: predicted on the grid as it is
    assert max(h for h, _ in predictor.models[0].sizes[len(sizes):]) > 48


def test_predictor_sees_thin_slices_as_the_trained_slab_and_answers_on_every_slice():
    hu = head_volume((24, 96, 80)).astype(np.float32)
    hu[(hu > 50) & (hu < 100)] = 30  # no blood for the Recorder (50–90 HU); the skull stays
    hu[12, 36:44, 26:34] = 70.0  # blood in one thin slice only: 70 HU there, 40 HU in a 5 mm slab
    plain = EnsemblePredictor([Recorder()], manifest(None), CPU)(hu, (1.25, 0.9, 0.9))
    slab = EnsemblePredictor([Recorder()], manifest(None, slab_mm=5.0), CPU)(hu, (1.25, 0.9, 0.9))
    assert slab.shape == hu.shape
    assert plain[12, 38:42, 28:32].min() > 0.5 and slab[12, 38:42, 28:32].max() < 0.5
    thick = EnsemblePredictor([Recorder()], manifest(None, slab_mm=5.0), CPU)(hu, (5.0, 0.9, 0.9))
    np.testing.assert_array_equal(thick, plain)  # slices as thick as the slab: used as they are
    with pytest.raises(WeightsError, match="slab_mm"):
        manifest(None, slab_mm=-5.0)


def test_cache_resamples_training_cases_to_the_trained_spacing(tmp_path: Path):
    hu = head_volume((4, 64, 56))
    label = (hu > 60).astype(np.uint8)
    paths = {}
    for kind, array in (("image", hu), ("label", label)):
        paths[kind] = tmp_path / f"{kind}.nii.gz"
        sitk.WriteImage(ct_image(array), str(paths[kind]))
    cached = cache_case(TrainCase("c", paths["image"], paths["label"]), tmp_path / "cache", (None, 0.9, 0.9))
    assert cached.hu().shape == (4, 32, 28) and cached.label().shape == (4, 32, 28)
    assert cached.spacing_zyx == pytest.approx((5.0, 0.9, 0.9))
    volume = label.sum() * voxel_ml((5.0, 0.45, 0.45))
    assert cached.label().sum() * voxel_ml(cached.spacing_zyx) == pytest.approx(volume, rel=0.15)


def _store_at(image: sitk.Image, pixel: float) -> sitk.Image:
    """The same head on a grid of ``pixel`` mm (same field of view), area-averaged like a scanner would."""
    size = [max(1, round(n * s / pixel)) for n, s in zip(image.GetSize()[:2], image.GetSpacing()[:2], strict=True)]
    ref = sitk.Image([*size, image.GetSize()[2]], image.GetPixelID())
    ref.SetSpacing((pixel, pixel, image.GetSpacing()[2]))
    ref.SetOrigin(image.GetOrigin())
    ref.SetDirection(image.GetDirection())
    variance = [max(0.0, pixel ** 2 - s ** 2) / 2.355 ** 2 for s in image.GetSpacing()[:2]] + [0.0]
    smooth = sitk.DiscreteGaussian(sitk.Cast(image, sitk.sitkFloat32), variance, useImageSpacing=True)
    return sitk.Resample(smooth, ref, sitk.Transform(), sitk.sitkLinear, -1024.0)


def test_shipped_model_gives_one_volume_whatever_the_pixel_size():
    from synthetic import generate_case

    ct, _, info = generate_case(4, "invesalius", size=512, max_slices=14, n_lesions=1,
                                    subtypes=("intraparenchymal",))
    assert info["lesions"][0]["inserted_ml"] > 2.0  # in the CT the model sees (the label: its 40–110 HU part)
    shipped = load_manifest(WEIGHTS)
    predictor = EnsemblePredictor(load_models(WEIGHTS, shipped, CPU), shipped, CPU)
    masks, volumes = {}, {}
    for pixel in (0.40, 0.45, 0.55, 0.9):
        stored = _store_at(ct, pixel)
        hu = sitk.GetArrayFromImage(stored)
        spacing = stored.GetSpacing()[::-1]
        mask = postprocess(predictor(hu, spacing), spacing, shipped.threshold, shipped.postprocess, hu=hu).mask
        volumes[pixel] = float(mask.sum()) * voxel_ml(spacing)
        image = sitk.GetImageFromArray(mask)
        image.CopyInformation(stored)
        masks[pixel] = sitk.GetArrayFromImage(sitk.Resample(image, _store_at(ct, 0.45), sitk.Transform(),
                                                            sitk.sitkNearestNeighbor, 0)) > 0
    reference = np.median(list(volumes.values()))
    assert reference > 1.0, volumes
    for pixel, volume in volumes.items():
        assert abs(volume - reference) <= 0.1 * reference, volumes
        both = masks[pixel] & masks[0.45]
        assert 2 * both.sum() / (masks[pixel].sum() + masks[0.45].sum()) >= 0.9, pixel
