"""A small head whose skull base puts a muscle inside the skull's hull (tests of the cranial cavity)."""

from __future__ import annotations

import numpy as np


def skull_base_head() -> tuple[np.ndarray, tuple[float, float, float]]:
    """Eight 5 mm slices of 0.5 mm pixels: a closed skull above; below it, the skull base: a smaller
    brain whose wall has a 1.5 mm gap on the left, to a temporalis that a zygomatic arch puts
    inside the skull's hull."""
    shape = (8, 128, 128)
    _, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    r = np.broadcast_to(np.hypot(y - 64, x - 64), shape)
    hu = np.where(r < 52, 55.0, -1000.0)  # scalp
    hu = np.where(r < 46, 1000.0, hu)  # skull
    hu = np.where(r < 40, 35.0, hu)  # brain
    base = hu[:3]
    base[:] = np.where(r[:3] < 52, -1000.0, base)
    base[:] = np.where(r[:3] < 34, 1000.0, base)
    base[:] = np.where(r[:3] < 30, 35.0, base)
    base[:, 61:64, 30:36] = 40.0  # the gap: thin squama averaged away
    base[:, 40:88, 8:30] = 55.0  # temporalis
    base[:, 40:88, 4:8] = 1000.0  # zygomatic arch
    return hu.astype(np.float32), (5.0, 0.5, 0.5)
