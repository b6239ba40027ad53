"""The brain's HU level, and the shift that brings a scan's brain into the range the folds were trained on.

A scanner's calibration, its tube voltage and beam hardening move brain tissue by several HU from
one scan to the next, and blood with it. The networks judge blood by its HU: on generated held-out
heads a whole-scan offset of +10 HU made them paint up to 325 mL on a normal head, and -10 HU cut
their DSC on bleeds over 1 mL from 0.840 to 0.681. So the predictor measures the brain's level (a robust mean of the
parenchyma, :func:`brain_level`) and, where it lies outside the levels of the training heads
(manifest ``inference.brain_hu``, measured at export: down to where most of them lie, up to where
nearly all do), shifts the scan by the difference before the folds see it. Inside that range nothing
changes: the folds have seen many such brains. The mask and every other step use the HU as read.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from model.anatomy import intracranial

CLEARANCE_MM = 5.0  # away from the skull: the inner table's partial volume is not brain
CENTRAL_SHARE = 0.5  # slices whose brain area is at least this share of the largest: no skull base or vertex
PARENCHYMA_HU = (15.0, 50.0)  # the first guess: brain, without CSF, blood and calcification
SPREAD_HU = 15.0  # later passes keep voxels this near the last level (blood at 50-90 HU stays out)
MIN_VOXELS = 2000  # fewer parenchyma voxels than this: no level (a slice at the vertex, no head)


def brain_level(hu: np.ndarray, spacing_zyx: Sequence[float]) -> float | None:
    """The brain's HU level: the mean of the middle half of the parenchyma's voxels (inside the
    skull, 5 mm from bone, in the central slices), re-centred twice on the last level so that a
    large bleed or the ventricles barely move it; None where too little brain is seen.

    Measured at every second pixel, which changes the level by less than 0.1 HU and takes a
    quarter of the time.
    """
    thin = np.asarray(hu[:, ::2, ::2])
    inside = intracranial(thin, (spacing_zyx[0], spacing_zyx[1] * 2, spacing_zyx[2] * 2), CLEARANCE_MM)
    area = inside.sum(axis=(1, 2))
    if not area.any():
        return None
    values = thin[inside & (area >= CENTRAL_SHARE * area.max())[:, None, None]].astype(np.float32)
    low, high = PARENCHYMA_HU
    level = None
    for _ in range(3):
        kept = values[(values > low) & (values < high)]
        if kept.size < MIN_VOXELS:
            return None
        q1, q3 = np.percentile(kept, [25, 75])
        level = float(kept[(kept >= q1) & (kept <= q3)].mean())
        low, high = level - SPREAD_HU, level + SPREAD_HU
    return level


def hu_shift(level: float | None, trained: Sequence[float] | None) -> float:
    """The HU to subtract so that ``level`` lies in ``trained`` (low, high); 0 inside it or without either."""
    if level is None or trained is None:
        return 0.0
    low, high = trained
    return level - high if level > high else level - low if level < low else 0.0
