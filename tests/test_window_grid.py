"""The sliding-window grid: MONAI's window positions reproduced, and crops that keep them."""

from __future__ import annotations

import pytest
from monai.data.utils import dense_patch_slices
from monai.inferers.utils import _get_scan_interval

from model.window_grid import aligned_crop, window_starts


@pytest.mark.parametrize(("size", "roi", "overlap"), [(512, 192, 0.5), (40, 16, 0.5), (33, 16, 0.25), (17, 16, 0.5),
                                                       (100, 32, 0.0), (97, 32, 0.9), (64, 32, 0.5)])
def test_window_starts_are_monais(size: int, roi: int, overlap: float) -> None:
    interval = _get_scan_interval((size,), (roi,), 1, (overlap,))
    assert window_starts(size, roi, overlap) == [s[0].start for s in dense_patch_slices((size,), (roi,), interval)]


@pytest.mark.parametrize("size", [512, 500, 417, 300])
def test_monai_on_the_aligned_crop_places_the_whole_volumes_windows(size: int) -> None:
    """For every region, the windows MONAI places on the crop are the whole volume's windows that meet
    the region, and no others."""
    roi, overlap = 192, 0.5
    whole = window_starts(size, roi, overlap)
    for start in range(0, size - 1, 37):
        for stop in range(start + 1, size + 1, 53):
            (crop,) = aligned_crop((size,), (roi,), overlap, (slice(start, stop),))
            met = [s for s in whole if s < stop and s + roi > start]
            length = crop.stop - crop.start
            on_crop = [crop.start + s for s in window_starts(length, roi, overlap)] if length > roi else [crop.start]
            assert on_crop == met, (start, stop)


def test_an_axis_no_longer_than_the_window_stays_whole() -> None:
    assert aligned_crop((12, 512), (16, 192), 0.5, (slice(3, 9), slice(200, 300))) == (slice(0, 12), slice(96, 480))
