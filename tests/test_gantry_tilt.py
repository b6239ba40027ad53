"""A tilted gantry's slices on an orthogonal grid and back (:mod:`model.gantry_tilt`)."""

from __future__ import annotations

import numpy as np
import pytest

from model.gantry_tilt import fit_tilt


def _origins(drift_mm: tuple[float, float], slices: int, step: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    along = np.arange(slices) * step
    return np.outer(np.arange(slices), drift_mm), along


def test_a_steady_drift_is_a_tilt_and_a_tiny_one_is_none():
    offsets, along = _origins((0.0, 5.0 * np.tan(np.radians(18.5))), 8)
    tilt = fit_tilt(offsets, along, (0.45, 0.45), 0.5)
    assert tilt.angle_deg == pytest.approx(18.5, abs=1e-6)
    assert tilt.per_mm_px == pytest.approx((0.0, np.tan(np.radians(18.5)) / 0.45))
    offsets, along = _origins((0.02, 0.0), 8)  # 0.14 mm over the series: well under half a pixel
    assert fit_tilt(offsets, along, (0.45, 0.45), 0.5) is None


def test_an_uneven_drift_is_refused():
    offsets, along = _origins((0.0, 1.6), 8)
    offsets[5, 1] += 2.0
    with pytest.raises(ValueError, match="off one steady tilt"):
        fit_tilt(offsets, along, (0.45, 0.45), 0.5)


@pytest.mark.parametrize(("drift_mm", "whole_pixels"),
                         [((0.0, 1.673), False), ((0.0, -1.673), False), ((0.9, -0.6), False), ((1.0, -1.8), True)])
def test_slices_go_onto_the_orthogonal_grid_at_their_place_and_masks_come_back(drift_mm, whole_pixels):
    rng = np.random.default_rng(0)
    slices, rows, columns = 7, 40, 48
    offsets, along = _origins(drift_mm, slices)
    tilt = fit_tilt(offsets, along, (0.5, 0.45), 0.5)
    drift = (tilt.per_mm_px[0] * 5.0, tilt.per_mm_px[1] * 5.0)  # pixels per slice
    volume = rng.normal(30.0, 5.0, (slices, rows, columns)).astype(np.float32)
    moved = tilt.to_orthogonal(volume, fill=-1024.0)
    assert moved.shape == (slices, *tilt.grid_shape(rows, columns))
    x0, y0 = tilt.corner
    for k in range(slices):  # acquired pixel (x, y) of slice k at the grid's (x - x0 + k dx, y - y0 + k dy)
        x, y = 20, 17
        gx, gy = x - x0 + k * drift[0], y - y0 + k * drift[1]
        if float(gx).is_integer() and float(gy).is_integer():
            assert moved[k, int(gy), int(gx)] == pytest.approx(volume[k, y, x], abs=1e-4)
        # the grid holds the whole slice: as much signal as was acquired, the rest is fill
        assert (moved[k] > -500).sum() == pytest.approx(rows * columns, rel=0.1)
    blob = np.zeros((slices, rows, columns), np.uint8)
    blob[2:5, 10:25, 12:30] = 1
    on_grid = (tilt.to_orthogonal(blob.astype(np.float32), fill=0.0) >= 0.5).astype(np.uint8)
    back = tilt.to_slices(on_grid, rows, columns)
    assert back.shape == blob.shape
    assert 2 * (back & blob).sum() / (back.sum() + blob.sum()) > 0.95
    if whole_pixels:  # 2 and -4 pixels a slice: moved there and back without interpolation
        np.testing.assert_array_equal(back, blob)
        sy, sx = round(3 * drift[1]) - y0, round(3 * drift[0]) - x0
        np.testing.assert_allclose(moved[3, sy: sy + rows, sx: sx + columns], volume[3], atol=1e-4)
