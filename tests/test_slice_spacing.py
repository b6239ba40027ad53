"""Runs of slices at several spacings on one regular grid and back (:mod:`model.slice_spacing`)."""

from __future__ import annotations

import numpy as np
import pytest

from model.slice_spacing import fit_restack

THIN_THEN_THICK = np.array([0.0, 2.5, 5.0, 7.5, 11.25, 16.25, 21.25, 26.25])  # 2.5 mm, one 3.75 mm join, 5 mm


def test_regular_slices_need_no_grid():
    assert fit_restack(np.arange(8) * 5.0 + 0.01 * np.sin(np.arange(8)), 0.02, 0.02) is None


def test_a_thin_run_then_a_thick_one_goes_on_the_coarsest_grid_laid_on_the_thick_slices():
    restack = fit_restack(THIN_THEN_THICK + 40.0, 0.02, 0.02)
    assert restack.step_mm == pytest.approx(5.0) and restack.spacings_mm == pytest.approx((2.5, 5.0))
    assert restack.first_plane_mm == pytest.approx(1.25) and restack.planes == 6  # 1.25, 6.25, ... 26.25 mm
    volume = np.broadcast_to(np.arange(8.0)[:, None, None], (8, 3, 4)).astype(np.float32)  # slice k holds k
    grid = restack.to_grid(volume)[:, 1, 2]
    # thin slices averaged in pairs (cells up to halfway between centres: 0/1, 2/3), the join weighted by
    # overlap (slice 3's cell reaches 9.375 mm: 0.625 of plane 11.25's 5 mm), thick slices as they are
    np.testing.assert_allclose(grid, [0.5, 2.5, (0.625 * 3 + 4.375 * 4) / 5, 5, 6, 7], atol=1e-5)
    marks = np.arange(6)[:, None, None] * np.ones((1, 3, 4), np.uint8)
    np.testing.assert_array_equal(restack.to_slices(marks)[:, 0, 0], [0, 0, 1, 1, 2, 3, 4, 5])  # the plane it lies in


@pytest.mark.parametrize("along", [
    [0, 5, 10, 20, 25, 30],          # one slice missing from a regular series
    [0, 5, 10, 15, 25],              # the last gap alone
    [0, 2.5, 5, 7.5, 20, 25, 30],    # a join far wider than both spacings
    [0, 3, 4, 9, 14, 19],            # runs of one gap each
])
def test_gaps_that_are_not_runs_are_refused(along):
    with pytest.raises(ValueError, match="uneven slice spacing"):
        fit_restack(np.asarray(along, float), 0.02, 0.02)
