"""Bright non-blood structures (SPEC §1 mimics), added to negatives and positives alike, never labelled.

Calcified pineal gland and choroid plexus (present in most adults), falx calcification, basal-ganglia
calcification, dense venous sinuses, and a dense falx and tentorium (thin dural sheets at blood's HU,
which a threshold takes for a subdural), placed from the anatomy's ventricles, midline and inner table.
"""

from __future__ import annotations

import numpy as np

from synthetic.lesions import Edit, _box, _offsets, _soft
from synthetic.sources import Anatomy


def _blob(anat: Anatomy, center_mm: np.ndarray, axes_mm: np.ndarray, hu: float, kind: str) -> Edit | None:
    center = center_mm / np.asarray(anat.spacing)
    if np.any(center < 0) or np.any(center >= anat.hu.shape):
        return None
    box = _box(anat, center, axes_mm + 2.0)
    dz, dy, dx = _offsets(anat, box, center)
    r = np.sqrt((dz / axes_mm[0]) ** 2 + (dy / axes_mm[1]) ** 2 + (dx / axes_mm[2]) ** 2)
    fraction = _soft((1.0 - r) * float(axes_mm.min())) * anat.intracranial[box]
    return Edit(box, fraction, hu, kind, False) if fraction.any() else None


def make_mimics(anat: Anatomy, rng: np.random.Generator) -> list[Edit]:
    """A random set of mimics for one case."""
    edits: list[Edit | None] = []
    spacing = np.asarray(anat.spacing)
    vent = np.argwhere(anat.ventricles) * spacing if anat.ventricles.any() else None
    if vent is not None:
        vz, vy, _ = vent.mean(axis=0)
        if rng.random() < 0.75:  # pineal: midline, behind the third ventricle
            at = np.array([vz - rng.uniform(4, 10), vy + rng.uniform(8, 16), anat.midline_x])
            edits.append(_blob(anat, at, rng.uniform(1.5, 3.5, 3), float(rng.uniform(120, 400)), "pineal"))
        if rng.random() < 0.65:  # choroid plexus in the atria (posterior part of each lateral ventricle)
            for side in (-1.0, 1.0):
                part = vent[(vent[:, 2] - anat.midline_x) * side > 4.0]
                if len(part) > 10:
                    atrium = part[part[:, 1] >= np.percentile(part[:, 1], 85)].mean(axis=0)
                    edits.append(_blob(anat, atrium, rng.uniform(2.0, 3.5, 3), float(rng.uniform(100, 220)),
                                       "choroid_plexus"))
        if rng.random() < 0.15:  # basal ganglia
            for side in (-1.0, 1.0):
                at = np.array([vz - 4.0, vy - 8.0, anat.midline_x + side * rng.uniform(18, 24)])
                edits.append(_blob(anat, at, rng.uniform(1.0, 2.5, 3), float(rng.uniform(110, 250)), "basal_ganglia"))
    if rng.random() < 0.35:  # falx calcification: a thin plaque in the midline
        zs = np.flatnonzero(anat.intracranial.any(axis=(1, 2)))
        z = zs[0] + rng.uniform(0.55, 0.85) * (zs[-1] - zs[0])
        ys = np.flatnonzero(anat.intracranial[int(z)].any(axis=1))
        if ys.size:
            y = ys[0] + rng.uniform(0.15, 0.45) * (ys[-1] - ys[0])
            at = np.array([z * spacing[0], y * spacing[1], anat.midline_x])
            edits.append(_blob(anat, at, np.array([rng.uniform(2, 5), rng.uniform(4, 12), 0.9]),
                               float(rng.uniform(150, 500)), "falx"))
    if rng.random() < 0.55:  # dense venous sinuses (high haematocrit): superior sagittal + transverse
        x_mm = np.arange(anat.hu.shape[2]) * spacing[2]
        y_mm = np.arange(anat.hu.shape[1]) * spacing[1]
        midband = (np.abs(x_mm - anat.midline_x) < 4.0)[None, None, :]
        posterior = (y_mm > np.median(np.argwhere(anat.intracranial.any(axis=(0, 2)))) * spacing[1])[None, :, None]
        sinus = anat.intracranial & (anat.inner_dist < 3.5) & midband & posterior
        if sinus.any():
            idx = np.argwhere(sinus)
            box = tuple(slice(int(a), int(b) + 1) for a, b in zip(idx.min(0), idx.max(0), strict=True))
            fraction = (_soft(3.5 - anat.inner_dist[box]) * sinus[box]).astype(np.float32)
            edits.append(Edit(box, fraction, float(rng.uniform(52, 66)), "dense_sinus", False))
    if rng.random() < 0.5:
        edits.append(_dural_sheets(anat, rng))
    return [e for e in edits if e is not None]


def _dural_sheets(anat: Anatomy, rng: np.random.Generator) -> Edit | None:
    """A dense falx (midline sheet, upper brain) and tentorium (a sheet sloping up from the back of the
    skull towards the incisura, over the cerebellum), 1–2 mm thick at 50–75 HU."""
    spacing = np.asarray(anat.spacing)
    idx = np.argwhere(anat.intracranial[::2, ::2, ::2]) * 2
    if len(idx) == 0:
        return None
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    z = ((np.arange(lo[0], hi[0]) - lo[0]) * spacing[0])[:, None, None]
    y = ((np.arange(lo[1], hi[1]) - lo[1]) * spacing[1])[None, :, None]
    x = (np.arange(lo[2], hi[2]) * spacing[2] - anat.midline_x)[None, None, :]
    height, depth = (hi[0] - lo[0]) * spacing[0], (hi[1] - lo[1]) * spacing[1]
    half = float(rng.uniform(0.5, 1.0))
    sheet = np.zeros(anat.intracranial[box].shape, np.float32)
    if rng.random() < 0.8:  # falx: the upper part of the midline plane
        sheet = np.maximum(sheet, _soft(half - np.abs(x)) * (z > rng.uniform(0.35, 0.55) * height))
    if rng.random() < 0.7:  # tentorium: rises anteriorly from the back of the skull, tented at the midline
        level = rng.uniform(0.2, 0.3) * height + (depth - y) * rng.uniform(0.25, 0.45) - 0.004 * x ** 2
        sheet = np.maximum(sheet, _soft(half - np.abs(z - level)) * (y > rng.uniform(0.45, 0.6) * depth))
    fraction = (sheet * anat.intracranial[box] * (anat.inner_dist[box] > 0.5)).astype(np.float32)
    return Edit(box, fraction, float(rng.uniform(50, 75)), "dural_sheet", False) if fraction.any() else None
