"""A series reconstructed at several slice spacings on one regular grid, and its mask back on the
acquired slices.

Sequential head protocols often reconstruct the posterior fossa in thin slices and the cerebrum in
thick ones (2.5 and 5 mm, 3 and 8 mm) into one series. Each run of slices is regular, and where the
runs meet one gap lies between the two spacings (the centres of a thin and a thick slab). Every step
after reading needs one regular grid. It is the grid of the coarsest run, laid on that run's own
slices so that they stay as acquired; each other plane is the slab its thickness spans, the
acquired slices averaged by how much of it each covers (a slice covers up to halfway to its
neighbours). Thin slices are so averaged into a thick slab, as a scanner would reconstruct it.
Interpolating thick slices onto a thin grid instead would blur two slabs into each plane, and on
generated heads it painted 7 mL on a normal one. A lone longer gap inside slices of one spacing is
a missing slice, and is refused: no grid can say what was there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RESTACK_METADATA = "slice_spacings_mm"  # an image put on one grid carries its acquired spacings under this key


@dataclass(frozen=True)
class Restack:
    """Acquired slices at ``heights_mm`` above the first on a regular grid of ``step_mm`` whose first plane
    lies ``first_plane_mm`` above the first slice."""

    heights_mm: tuple[float, ...]
    step_mm: float
    first_plane_mm: float
    planes: int
    spacings_mm: tuple[float, ...]  # the runs' spacings, in the order the slices have them

    def _cells(self) -> tuple[np.ndarray, np.ndarray]:
        """The stretch of height each acquired slice stands for: up to halfway to its neighbours."""
        h = np.asarray(self.heights_mm)
        middle = (h[1:] + h[:-1]) / 2
        return np.r_[h[0] - (h[1] - h[0]) / 2, middle], np.r_[middle, h[-1] + (h[-1] - h[-2]) / 2]

    def to_grid(self, volume: np.ndarray) -> np.ndarray:
        """Each grid plane's slab: the acquired slices (k, rows, columns) weighted by their overlap with it."""
        low, high = self._cells()
        out = np.zeros((self.planes, *volume.shape[1:]), np.float32)
        for z in range(self.planes):
            centre = self.first_plane_mm + z * self.step_mm
            overlap = np.clip(np.minimum(high, centre + self.step_mm / 2) - np.maximum(low, centre - self.step_mm / 2),
                              0.0, None)
            for k in np.flatnonzero(overlap):
                out[z] += (overlap[k] / overlap.sum()) * volume[k]
        return out

    def to_slices(self, mask: np.ndarray) -> np.ndarray:
        """A mask on the grid back on the acquired slices: each takes the plane its centre lies in."""
        plane = np.floor((np.asarray(self.heights_mm) - self.first_plane_mm) / self.step_mm + 0.5).astype(int)
        return mask[np.clip(plane, 0, self.planes - 1)]


def fit_restack(along_mm: np.ndarray, tolerance_mm: float, share: float) -> Restack | None:
    """The grid for slices at ``along_mm`` (sorted, distinct) along their normal; None when they are
    already regular (every slice within ``tolerance_mm`` or ``share`` of the spacing of the grid).

    Raises ValueError, with the range of the gaps, when they are not runs of regular slices: a longer
    gap among slices of one spacing (a missing slice), a lone gap at either end, or a join outside the
    spacings of the runs it joins.
    """
    along = np.asarray(along_mm, float)
    gaps = np.diff(along)
    step = (along[-1] - along[0]) / (len(along) - 1)
    if np.abs(along - (along[0] + step * np.arange(len(along)))).max() <= max(tolerance_mm, share * step):
        return None
    runs: list[list[float]] = []  # consecutive gaps equal within the tolerance
    for gap in gaps:
        if runs and abs(gap - float(np.mean(runs[-1]))) <= max(tolerance_mm, share * gap):
            runs[-1].append(gap)
        else:
            runs.append([gap])
    spacings = [float(np.mean(run)) for run in runs]
    uneven = ValueError(f"uneven slice spacing ({gaps.min():.2f} to {gaps.max():.2f} mm between {len(along)} "
                        "slices; missing slices?)")
    for i, run in enumerate(runs):
        if len(run) >= 2:
            continue
        if i == 0 or i == len(runs) - 1:
            raise uneven  # a lone gap at either end: nothing to join
        before, after = spacings[i - 1], spacings[i + 1]
        if len(runs[i - 1]) < 2 or len(runs[i + 1]) < 2 or abs(before - after) <= tolerance_mm:
            raise uneven  # between two runs of one spacing: a missing slice
        if not min(before, after) - tolerance_mm <= spacings[i] <= max(before, after) + tolerance_mm:
            raise uneven
    regular = [(s, i) for i, (s, run) in enumerate(zip(spacings, runs, strict=True)) if len(run) >= 2]
    step, coarsest = max(regular)
    heights = along - along[0]
    anchor = float(heights[sum(len(run) for run in runs[:coarsest])])  # the coarsest run's first slice
    first = anchor + step * math.ceil((-(heights[1] - heights[0]) / 2 - anchor) / step - 1e-6)
    last = anchor + step * math.floor((heights[-1] + (heights[-1] - heights[-2]) / 2 - anchor) / step + 1e-6)
    return Restack(tuple(float(h) for h in heights), step, first, round((last - first) / step) + 1,
                   tuple(s for s, _ in regular))
