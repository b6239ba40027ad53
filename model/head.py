"""Where the head is, and bounding boxes: the predictor's crops, training's crop centres, post-processing's region.

Most of a CT's field of view is air, and the patient table is dense but not head: the head is the
voxels denser than air in connected regions at least a tenth the size of the largest.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

HEAD_HU = -500.0  # anything denser than this is patient (or table), not air or padding
KEEP_FRACTION = 0.1  # dense regions smaller than this share of the largest are not head (table, cables)
BLOCK = 4  # regions are found on a 4 × 4 in-plane max-pooled mask: 16× less to label; regions closer
# than a few voxels (a table ≥ 2 mm from the head is not) count as one


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of a boolean array; ``None`` when it is all false (one C pass, no index arrays)."""
    boxes = ndimage.find_objects(mask.view(np.uint8))
    return boxes[0] if boxes else None


def relative(inner: tuple[slice, ...], outer: tuple[slice, ...]) -> tuple[slice, ...]:
    """Box ``inner`` in the coordinates of the crop ``outer`` that holds it."""
    return tuple(slice(i.start - o.start, i.stop - o.start) for i, o in zip(inner, outer, strict=True))


def head_mask(hu: np.ndarray) -> np.ndarray:
    """Voxels denser than air that belong to the head's connected region(s), (Z, Y, X) bool."""
    dense = hu > HEAD_HU
    depth, height, width = dense.shape
    padded = np.pad(dense, ((0, 0), (0, -height % BLOCK), (0, -width % BLOCK)))
    coarse = padded.reshape(depth, padded.shape[1] // BLOCK, BLOCK, padded.shape[2] // BLOCK, BLOCK).any((2, 4))
    labels, count = ndimage.label(coarse)
    if count == 0:
        return dense
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.isin(labels, np.flatnonzero(sizes >= KEEP_FRACTION * sizes.max()) + 1)
    return dense & keep.repeat(BLOCK, 1).repeat(BLOCK, 2)[:, :height, :width]


def head_box(hu: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Bounding box of the head (:func:`head_mask`); ``None`` when there is no dense voxel."""
    return bounding_box(head_mask(hu))


def slice_boxes(mask: np.ndarray, context: int, factor: tuple[int, int],
                margin: int) -> list[tuple[int, slice, slice]]:
    """(z, rows, columns) of every slice whose head box (with ``context`` neighbours) is not empty.

    Each box is widened by ``margin`` and snapped outwards to multiples of ``factor`` (clipped to the
    slice): the network then computes on the whole slice's grid, so inside the box it gives the
    whole slice's result except within reach of the box's border, which the margin keeps away.
    """
    boxes = []
    for z in range(mask.shape[0]):
        box = bounding_box(mask[max(z - context, 0): z + context + 1].any(axis=0))
        if box is not None:
            boxes.append((z, *(slice(max(s.start - margin, 0) // f * f, min(-(-(s.stop + margin) // f) * f, n))
                               for s, f, n in zip(box, factor, mask.shape[1:], strict=True))))
    return boxes
