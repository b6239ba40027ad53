"""The 3D cascade's crop, aligned to the sliding-window grid of the whole volume, so cropping is exact.

MONAI's ``sliding_window_inference`` places its windows by the input's size (``dense_patch_slices``:
every ``int(roi × (1 − overlap))`` voxels, the last one moved back to end at the edge) and blends
them with a Gaussian. The cascade's networks use instance norm, whose statistics are those of the
window they see, so a window placed anywhere else gives other values: running the windows over the
head's box instead of the volume changed the masks (Dice 0.59 against the whole volume with random
weights). Cropping to the union of the whole volume's windows that meet a region makes MONAI place
exactly those windows on the crop, and each voxel of the region is then blended from the same
windows as in the whole volume: the same probability, bit for bit. For the cascade, stage 2 runs on
the windows that meet the head and stage 1 on the windows that meet stage 2's crop, so that every
stage-2 window sees stage 1's exact probability. MONAI has no option to skip windows, hence this
module; its window placement is reproduced here and tested against MONAI's own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Where MONAI's sliding windows start along one axis of ``size`` voxels (``size > roi``)."""
    interval = max(int(roi * (1 - overlap)), 1)
    count = next(n for n in range(math.ceil(size / interval)) if n * interval + roi >= size) + 1
    return [min(n * interval, size - roi) for n in range(count)]


def aligned_crop(shape: Sequence[int], roi: Sequence[int], overlap: float,
                 region: Sequence[slice]) -> tuple[slice, ...]:
    """The union of the whole volume's windows that meet ``region``: MONAI run on this crop places the
    same windows there, and every voxel of ``region`` gets the value it gets in the whole volume.
    An axis no longer than the window is kept whole (MONAI pads it, the same on the crop)."""
    crop = []
    for size, length, part in zip(shape, roi, region, strict=True):
        if size <= length:
            crop.append(slice(0, size))
            continue
        met = [s for s in window_starts(size, length, overlap) if s < part.stop and s + length > part.start]
        crop.append(slice(min(met), max(met) + length))
    return tuple(crop)
