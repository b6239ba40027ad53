"""Edge padding at a crop's inner sides: each padded layer computes on the crop what it computes on
the whole image when the image goes on beyond the crop as the crop's edge repeated."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_weights
from torch import nn

from model.crop_border import CropBorderPadding, Sides, crop_sides
from model.predictor import EnsemblePredictor
from model.weights import load_manifest, load_models

CPU = torch.device("cpu")
EXTEND = 4  # input pixels the whole image has beyond each inner side


def layers() -> list[nn.Module]:
    torch.manual_seed(0)
    return [nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 3, stride=2, padding=1),
            nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1)]


@pytest.mark.parametrize("sides", [Sides(*flags) for flags in itertools.product((False, True), repeat=4)])
@pytest.mark.parametrize("index", range(3), ids=["conv", "strided", "transposed"])
@torch.inference_mode()
def test_a_padded_layer_on_the_crop_equals_it_on_the_edge_extended_image(sides: Sides, index: int) -> None:
    """Outer sides (on the image's edge) keep zero padding; inner ones see the image's continuation."""
    layer = layers()[index]
    crop = torch.randn(2, 3, 8, 12)
    top, bottom, left, right = (EXTEND * side for side in sides)
    whole = F.pad(crop, (left, right, top, bottom), mode="replicate")
    scale = layer.stride[0] if isinstance(layer, nn.ConvTranspose2d) else 1 / layer.stride[0]
    expected = layer(whole)[..., int(top * scale): int(top * scale) + int(crop.shape[-2] * scale),
                            int(left * scale): int(left * scale) + int(crop.shape[-1] * scale)]
    with CropBorderPadding(layer).inner(sides):
        got = layer(crop)
    torch.testing.assert_close(got, expected)
    if all(sides):
        assert not torch.allclose(layer(crop), expected)  # zero padding differs: the test can fail


@torch.inference_mode()
def test_the_layers_are_as_trained_outside_the_block_even_after_an_error() -> None:
    layer, x = layers()[0], torch.randn(1, 3, 6, 6)
    plain = layer(x)
    with pytest.raises(RuntimeError), CropBorderPadding(layer).inner(Sides(True, True, True, True)):
        layer(torch.randn(1, 5, 6, 6))  # wrong channel count
    assert layer.padding == (1, 1)
    torch.testing.assert_close(layer(x), plain)


def test_hooks_go_on_the_predictors_own_copies_once(tmp_path: Path) -> None:
    """The predictor pads its own copies: a model being trained or benchmarked stays as it was."""
    tiny_weights(tmp_path, "segresnet2d", folds=1)
    manifest = load_manifest(tmp_path)
    model = load_models(tmp_path, manifest, CPU)[0]
    predictor = EnsemblePredictor([model], manifest, CPU)
    padded = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d) and any(m.padding)]
    assert padded and not any(m._forward_pre_hooks for m in padded)
    assert predictor.models[0] is not model
    assert {len(m._forward_pre_hooks) for m in predictor.models[0].modules()
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d) and any(m.padding)} == {1}


def test_crop_sides_and_their_mirror() -> None:
    sides = crop_sides(slice(0, 16), slice(8, 64), 32, 64)
    assert sides == Sides(top=False, bottom=True, left=True, right=False)
    assert sides.mirrored() == Sides(top=False, bottom=True, left=False, right=True)


def test_mirroring_a_crop_inside_the_slice_on_one_side_only(tmp_path: Path) -> None:
    """The flipped view's inner side is the other one: the mirrored result is the mean of the crop's
    prediction and the flipped volume's, whose crop has its inner side on the left."""
    tiny_weights(tmp_path, "segresnet2d", folds=1, inference={"crop_margin": 4})
    manifest = load_manifest(tmp_path)
    models = load_models(tmp_path, manifest, CPU)
    hu = np.full((4, 32, 64), -1000.0, dtype=np.float32)
    hu[:, 4:28, :24] = 40.0  # touches the left edge: the crop's left side is the slice's, its right is inside
    plain = EnsemblePredictor(models, manifest, CPU, mirror=False)
    expected = (plain(hu) + plain(hu[..., ::-1].copy())[..., ::-1]) / 2
    np.testing.assert_allclose(EnsemblePredictor(models, manifest, CPU, mirror=True)(hu), expected, atol=1e-6)
