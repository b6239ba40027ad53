"""A tilted-gantry series on an orthogonal grid, and its mask back on the slices as acquired.

Head CT is often acquired with the gantry tilted along the orbitomeatal line, to spare the lenses. Each
slice is then an ordinary axial image, but a slice's origin sits further along the image plane the
higher it lies, than an orthogonal stack would put it: the grid is sheared. SimpleITK, NIfTI's
quaternion and the 3D post-processing all assume an orthogonal grid, so the series is resampled onto
one, as dcm2niix does: the same planes (slice k of the new grid is the plane of slice k), each slice
moved in-plane by its own drift (linear interpolation), the grid widened so that no slice loses pixels.
It is a translation per slice, done with ``scipy.ndimage.shift``: SimpleITK cannot represent the sheared
source to resample it from. The mask goes back the same way, slice by slice, for the DICOM SEG that
references the acquired slices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

TILT_METADATA = "gantry_tilt_deg"  # an image put on the orthogonal grid carries its angle under this key


@dataclass(frozen=True)
class Tilt:
    """Slice k's pixel (x, y) lies on the orthogonal grid's (x − x0 + h_k·dx, y − y0 + h_k·dy) of slice k,
    h_k its height above the first slice and (dx, dy) the drift per millimetre of height."""

    per_mm_px: tuple[float, float]  # in-plane displacement of a slice's origin per mm along the normal, pixels
    heights_mm: tuple[float, ...]  # each slice's height above the first, along the normal
    angle_deg: float  # between the stacking direction and the slice normal

    def _drift(self, k: int) -> tuple[float, float]:
        """(x, y) pixels by which slice k's origin lies off the first's, in-plane."""
        return self.heights_mm[k] * self.per_mm_px[0], self.heights_mm[k] * self.per_mm_px[1]

    @property
    def corner(self) -> tuple[int, int]:
        """(x0, y0): the first slice's origin in the orthogonal grid is (−x0, −y0); never positive."""
        last = self._drift(len(self.heights_mm) - 1)
        return math.floor(min(0.0, last[0])), math.floor(min(0.0, last[1]))

    def grid_shape(self, rows: int, columns: int) -> tuple[int, int]:
        """(rows, columns) of the orthogonal grid that holds every slice whole."""
        x0, y0 = self.corner
        dx, dy = self._drift(len(self.heights_mm) - 1)
        return rows + math.ceil(max(0.0, dy)) - y0, columns + math.ceil(max(0.0, dx)) - x0

    def _shift(self, k: int) -> tuple[float, float]:
        """(rows, columns) by which slice k moves onto the orthogonal grid."""
        x0, y0 = self.corner
        dx, dy = self._drift(k)
        return dy - y0, dx - x0

    def to_orthogonal(self, volume: np.ndarray, fill: float) -> np.ndarray:
        """The acquired slices (k, rows, columns) on the orthogonal grid, linearly interpolated; ``fill``
        where no slice was acquired."""
        out = np.full((len(volume), *self.grid_shape(*volume.shape[1:])), fill, np.float32)
        for k, plane in enumerate(volume):
            canvas = np.full(out.shape[1:], fill, np.float32)
            canvas[: plane.shape[0], : plane.shape[1]] = plane
            out[k] = ndimage.shift(canvas, self._shift(k), order=1, mode="constant", cval=fill)
        return out

    def to_slices(self, mask: np.ndarray, rows: int, columns: int) -> np.ndarray:
        """A mask on the orthogonal grid back on the acquired slices (nearest voxel)."""
        out = np.zeros((len(mask), rows, columns), mask.dtype)
        for k, plane in enumerate(mask):
            y, x = self._shift(k)
            out[k] = ndimage.shift(plane, (-y, -x), order=0, mode="constant", cval=0)[:rows, :columns]
        return out


def fit_tilt(offsets_mm: np.ndarray, along_mm: np.ndarray, pixel_mm: tuple[float, float],
             tolerance_px: float) -> Tilt | None:
    """The tilt of slices whose origins lie ``offsets_mm`` (k, 2: along a row, down a column) in-plane
    from the first's, ``along_mm`` along the normal; None when they drift under ``tolerance_px`` in all.

    Raises ValueError when no single tilt places every slice within the tolerance (several tilts, or
    a series put together from pieces).
    """
    px = np.asarray(offsets_mm, float) / np.asarray(pixel_mm, float)  # pixels (x, y)
    if np.linalg.norm(px, axis=1).max() <= tolerance_px:
        return None
    heights = np.asarray(along_mm, float) - along_mm[0]
    per_mm = (heights @ px) / (heights @ heights)  # least squares through the first slice
    residual = np.linalg.norm(px - np.outer(heights, per_mm), axis=1).max()
    if residual > tolerance_px:
        raise ValueError(f"slice origins drift in-plane unevenly (up to {residual:.1f} pixels off one steady tilt)")
    angle = math.degrees(math.atan(float(np.linalg.norm(per_mm * np.asarray(pixel_mm, float)))))
    return Tilt((float(per_mm[0]), float(per_mm[1])), tuple(float(h) for h in heights), angle)
