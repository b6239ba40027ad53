"""The ensemble predictor's speed-ups must not change its result: batching, the head-box crop and
the device-side windowing are checked against naive per-slice / plain MONAI references."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import head_volume, tiny_weights
from monai.inferers import sliding_window_inference

from model.compute import ComputePath
from model.crop_border import CropBorderPadding
from model.head import head_box, head_mask, slice_boxes
from model.predictor import EnsemblePredictor, Prediction
from model.weights import load_manifest, load_models
from model.window_grid import aligned_crop
from model.windowing import window_slices, window_volume

CPU = torch.device("cpu")


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """These networks are tiny: on a busy 2-core machine thread hand-offs cost 15× the arithmetic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def predictor(folder: Path, **kwargs: object) -> EnsemblePredictor:
    manifest = load_manifest(folder)
    return EnsemblePredictor(load_models(folder, manifest, CPU), manifest, CPU, **kwargs)


def with_air(hu: np.ndarray, z: int = 2, y: int = 7, x: int = 5) -> np.ndarray:
    """The same head with air slices above and below and an air margin around it."""
    return np.pad(hu, ((z, z + 1), (y, y + 3), (x + 2, x)), constant_values=-1000).astype(np.float32)


@torch.inference_mode()
def whole_slice_2d(folder: Path, hu: np.ndarray) -> np.ndarray:
    """What the crop must reproduce: every fold on every whole slice (MONAI sliding window, one window)."""
    manifest = load_manifest(folder)
    models = load_models(folder, manifest, CPU)
    x = window_slices(torch.from_numpy(hu), manifest.input_mode)
    mean = sum(torch.sigmoid(sliding_window_inference(x, hu.shape[1:], 1, model)) for model in models) / len(models)
    return mean[:, 0].numpy()


def test_head_mask_leaves_out_the_table() -> None:
    head = np.pad(head_volume((6, 64, 56)), ((0, 0), (0, 8), (0, 0)), constant_values=-1000).astype(np.float32)
    rows, cols = np.flatnonzero((head > -500).any((0, 2))), np.flatnonzero((head > -500).any((0, 1)))
    hu = head.copy()
    hu[:, 68:70, 4:52] = 150.0  # a table below the head, 10 voxels of air away (BLOCK-wide gaps may merge)
    assert head_box(hu) == (slice(0, 6), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    assert not head_mask(hu)[:, 60:].any() and head_mask(hu)[:, 30, 28].all()


@pytest.mark.parametrize("mode", ["windows3", "slices3", "combined9"])
def test_2d_crop_equals_whole_slice_inference(tmp_path: Path, mode: str) -> None:
    """The head crop is an optimisation only: on the head the result is the whole slice's. The head sits
    off the network's 4-pixel grid (the crop must snap to it) with air around it (the margin must keep
    the crop's zero padding out of the head's reach)."""
    tiny_weights(tmp_path, "segresnet2d", mode)
    hu = np.full((9, 128, 120), -1000.0, dtype=np.float32)
    hu[1:8, 37:77, 45:81] = head_volume((7, 40, 36))
    got = predictor(tmp_path, batch_size=3)(hu)
    assert got.shape == hu.shape and got.dtype == np.float32
    head = head_mask(hu)
    np.testing.assert_allclose(got[head], whole_slice_2d(tmp_path, hu)[head], atol=1e-5)
    assert got[head].min() > 0 and not got[[0, 8]].any() and not got[:, :, :16].any()


def test_the_crop_needs_its_inner_sides_edge_padded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At a 16-pixel margin the tiny network's crop gives the whole slice's result on the head only with
    edge padding at the crop's four inner sides (measured: 6e-8 off); with the convolutions' zero padding
    there it is 4e-6 off, as the shipped model is at its margin (docs/speed.md)."""
    tiny_weights(tmp_path, "segresnet2d", inference={"crop_margin": 16})
    hu = np.full((5, 160, 152), -1000.0, dtype=np.float32)
    hu[:, 61:101, 55:91] = head_volume((5, 40, 36))  # the crop, 16 pixels wider, stays inside the slice
    head = head_mask(hu)
    whole = whole_slice_2d(tmp_path, hu)[head]
    np.testing.assert_allclose(predictor(tmp_path)(hu)[head], whole, atol=1e-6, rtol=0)
    monkeypatch.setattr(CropBorderPadding, "inner", lambda _self, _sides: contextlib.nullcontext())
    assert np.abs(predictor(tmp_path)(hu)[head] - whole).max() > 1e-6  # the test can fail


def test_a_margin_as_wide_as_the_slice_gives_whole_slice_inference_everywhere(tmp_path: Path) -> None:
    tiny_weights(tmp_path, "segresnet2d", inference={"batch_size": 4, "crop_margin": 128})
    hu = np.full((5, 96, 88), -1000.0, dtype=np.float32)
    hu[:, 29:69, 33:69] = head_volume((5, 40, 36))
    np.testing.assert_allclose(predictor(tmp_path)(hu), whole_slice_2d(tmp_path, hu), atol=1e-5)


def test_slice_boxes_are_on_the_grid_with_a_margin() -> None:
    mask = np.zeros((3, 100, 90), dtype=bool)
    mask[1, 37:41, 45:50] = True
    mask[2, 2:95, 80:89] = True
    boxes = slice_boxes(mask, 0, (16, 8), 16)
    assert boxes[0] == (1, slice(16, 64), slice(24, 72))  # 37-16 → 16, 41+16 → 64; 45-16 → 24, 50+16 → 72
    assert boxes[1] == (2, slice(0, 100), slice(64, 90))  # clipped to the slice
    assert [b[0] for b in slice_boxes(mask, 1, (16, 8), 16)] == [0, 1, 2]  # a neighbour's head counts


@pytest.mark.parametrize("mode", ["windows3", "slices3", "combined9"])
def test_batch_size_does_not_change_the_result(tmp_path: Path, mode: str) -> None:
    tiny_weights(tmp_path, "segresnet2d", mode)
    hu = with_air(head_volume((9, 32, 32)))
    results = [predictor(tmp_path, batch_size=b)(hu) for b in (1, 4, 64)]
    for other in results[1:]:
        np.testing.assert_allclose(other, results[0], atol=1e-6)


def test_the_cpu_batch_holds_a_pixel_budget_unless_a_batch_size_is_given(tmp_path: Path) -> None:
    tiny_weights(tmp_path, "segresnet2d", inference={"batch_size": 8})
    budgeted, given = predictor(tmp_path), predictor(tmp_path, batch_size=8)
    assert budgeted._batch_of(512, 512) == 2 and budgeted._batch_of(448, 384) == 3
    assert budgeted._batch_of(256, 256) == 8 and budgeted._batch_of(1024, 1024) == 1
    assert given._batch_of(512, 512) == 8
    hu = with_air(head_volume((9, 32, 32)))
    budgeted.batch_pixels = 2 * 48 * 48  # a few slices per call at this size: the result is the same
    np.testing.assert_allclose(budgeted(hu), given(hu), atol=1e-6)


def test_3d_equals_plain_monai_sliding_window_over_the_whole_volume(tmp_path: Path) -> None:
    """The cascade's instance norm makes a window's output depend on where the window lies: on the head
    the predictor must give what MONAI gives over the whole volume (the benchmark's baseline), though it
    runs only the windows that meet the head; outside the head's box, zero."""
    tiny_weights(tmp_path, "cascade3d", folds=2)
    manifest = load_manifest(tmp_path)
    models = load_models(tmp_path, manifest, CPU)
    hu = np.pad(head_volume((8, 40, 36)), ((3, 5), (50, 14), (9, 61)), constant_values=-1000).astype(np.float32)
    box = head_box(hu)
    roi, overlap = manifest.inference.roi_size, manifest.inference.overlap
    first = aligned_crop(hu.shape, roi, overlap, aligned_crop(hu.shape, roi, overlap, box))
    assert all(f.stop - f.start < n for f, n in zip(first[1:], hu.shape[1:], strict=True))  # fewer windows in-plane
    expected = np.zeros(hu.shape, dtype=np.float32)
    with torch.inference_mode():
        x = window_volume(torch.from_numpy(hu))[None]
        for model in models:
            stage1 = torch.sigmoid(sliding_window_inference(x, roi, 1, model.stage1, overlap=overlap, mode="gaussian"))
            stage2 = sliding_window_inference(torch.cat([x, stage1], 1), roi, 1, model.stage2, overlap=overlap,
                                              mode="gaussian")
            expected += torch.sigmoid(stage2)[0, 0].numpy() / len(models)
    outside = np.ones(hu.shape, dtype=bool)
    outside[box] = False
    expected[outside] = 0.0
    got = EnsemblePredictor(models, manifest, CPU, batch_size=3)(hu)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert not got[outside].any()


def test_unaligned_3d_windows_do_not_see_the_air_around_the_head(tmp_path: Path) -> None:
    """``align_windows: false``: windows over the head's box alone, so the same head with more air
    around it gives the same probability there, and zero outside."""
    tiny_weights(tmp_path, "cascade3d", folds=1, inference={"roi_size": [4, 32, 32], "batch_size": 2,
                                                             "align_windows": False})
    hu = head_volume((8, 40, 40)).astype(np.float32)
    run = predictor(tmp_path, batch_size=2)
    tight, padded = run(hu), run(with_air(hu, z=0))
    box = (slice(0, 8), slice(7, 47), slice(7, 47))
    np.testing.assert_allclose(padded[box], tight, atol=1e-6)
    outside = padded.copy()
    outside[box] = 0
    assert not outside.any()
    aligned = replace(load_manifest(tmp_path), inference=replace(load_manifest(tmp_path).inference, align_windows=True))
    models = load_models(tmp_path, aligned, CPU)
    assert np.abs(EnsemblePredictor(models, aligned, CPU, batch_size=2)(with_air(hu, z=0))[box] - tight).max() > 1e-4


def test_3d_mirror_view_runs_the_flipped_crop(tmp_path: Path) -> None:
    """With the mirror view, the flipped crop's stage-2 part and head box are mirrored too: the result
    is the plain view's average with the flipped input's (not exact against the whole volume)."""
    tiny_weights(tmp_path, "cascade3d", folds=1)
    hu = np.pad(head_volume((6, 40, 36)), ((1, 1), (4, 20), (3, 37)), constant_values=-1000).astype(np.float32)
    got = predictor(tmp_path, mirror=True)(hu)
    plain = predictor(tmp_path, mirror=False)(hu)
    assert got.shape == hu.shape and np.isfinite(got).all()
    assert 0 < np.abs(got - plain).max() < 1.0 and not got[:, :, 45:].any()


def test_mirror_averages_the_flipped_prediction(tmp_path: Path) -> None:
    tiny_weights(tmp_path, "segresnet2d", folds=1)
    hu = head_volume((4, 32, 32)).astype(np.float32)
    hu[:, [0, -1], :] = hu[:, :, [0, -1]] = 0.0  # the box is the whole 32 × 32 field: no padding to flip
    plain, mirrored = predictor(tmp_path, mirror=False), predictor(tmp_path, mirror=True)
    expected = (plain(hu) + plain(hu[..., ::-1].copy())[..., ::-1]) / 2
    np.testing.assert_allclose(mirrored(hu), expected, atol=1e-6)


def test_volume_without_a_head_gives_zero_probability(tmp_path: Path) -> None:
    tiny_weights(tmp_path, "segresnet2d", folds=1)
    assert not predictor(tmp_path)(np.full((3, 32, 32), -1000.0, dtype=np.float32)).any()


def test_recheck_recomputes_near_threshold_slices_in_fp32(tmp_path: Path) -> None:
    """On a reduced-precision path with ``recheck_margin``, every slice with a probability within the
    margin of the threshold holds exactly the fp32 result, every other slice the bf16 one, and
    the prediction counts the slices computed again."""
    tiny_weights(tmp_path, "segresnet2d", "windows3")
    manifest = load_manifest(tmp_path)
    models = load_models(tmp_path, manifest, CPU)
    hu = with_air(head_volume((8, 48, 44)))
    paths = {p: ComputePath("cpu", p, False, "test", "test") for p in ("fp32", "bf16")}

    def run(precision: str, margin: float) -> Prediction:
        settings = replace(manifest, inference=replace(manifest.inference, recheck_margin=margin))
        return EnsemblePredictor(models, settings, CPU, path=paths[precision]).predict(hu)

    exact, plain = run("fp32", 0.0).prob, run("bf16", 0.0)
    assert plain.rechecked == 0 and np.abs(plain.prob - exact).max() > 0  # bf16 does round
    planned = [z for z, _, _ in EnsemblePredictor(models, manifest, CPU).slice_plan(hu)]
    distance = np.array([np.abs(plain.prob[z] - manifest.threshold).min() for z in planned])
    margin = float(np.median(distance))  # about half the slices come that near the threshold
    near = [z for z, d in zip(planned, distance, strict=True) if d < margin]
    assert 0 < len(near) < len(planned)
    checked = run("bf16", margin)
    assert checked.rechecked == len(near)
    far = [z for z in range(hu.shape[0]) if z not in near]
    np.testing.assert_array_equal(checked.prob[near], exact[near])
    np.testing.assert_array_equal(checked.prob[far], plain.prob[far])
    assert run("fp32", margin).rechecked == 0  # nothing to recheck on an fp32 path


def test_emulated_fp16_rounds_less_than_bf16(tmp_path: Path) -> None:
    """Export's stand-in for CUDA's fp16 autocast (training.export._reduced_path) computes on the CPU in
    fp16: the probabilities move off fp32's, by less than bf16's 8-bit mantissa moves them."""
    from training.export import _reduced_path

    tiny_weights(tmp_path, "segresnet2d", "windows3")
    manifest = load_manifest(tmp_path)
    models = load_models(tmp_path, manifest, CPU)
    hu = with_air(head_volume((4, 48, 44)))
    exact = EnsemblePredictor(models, manifest, CPU, path=ComputePath("cpu", "fp32", False, "t", "t")).predict(hu).prob
    error = {p: np.abs(EnsemblePredictor(models, manifest, CPU, path=_reduced_path(p)).predict(hu).prob - exact).max()
             for p in ("fp16", "bf16")}
    assert _reduced_path("fp16").autocast_dtype == torch.float16
    assert 0 < error["fp16"] < error["bf16"]
