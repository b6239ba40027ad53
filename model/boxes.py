"""Bounding boxes of boolean arrays: the head's crop (predictor) and the region post-processing labels."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of a boolean array; ``None`` when it is all false (one C pass, no index arrays)."""
    boxes = ndimage.find_objects(mask.view(np.uint8))
    return boxes[0] if boxes else None
