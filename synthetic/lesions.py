"""Haemorrhages of the five subtypes, and the bright mimics, as edits of an anatomy's source volume.

An :class:`Edit` is a box of the source grid with a fractional occupancy (0–1, soft over ~1 mm so the
in-plane edge has partial volume) and the HU the occupied part takes. Blood edits become the label
after the slab averaging and resampling of :mod:`synthetic.augment`; mimics and the oedema rim
change only the CT. Placement uses the anatomy's masks (SPEC §1 shapes):

- intraparenchymal: irregular blob deep in the brain, with a darker oedema rim (10–14 HU);
- subdural: crescent along the inner table over one hemisphere, not crossing the midline;
- epidural: biconvex lens against the inner table, short and thick;
- subarachnoid: thin blood filling sulci / cisterns around a point;
- intraventricular: fills part of a ventricle, or layers posteriorly (the dependent side, supine).

``irregular`` shapes (:data:`IRREGULAR`, chosen by ``make_lesion(..., irregular=True)`` only, so the
default cases of every seed stay as they were): an intraparenchymal bleed of 2–4 overlapping lobes with
a rough outline and sometimes satellite foci, and extra-axial collections whose thickness varies
along them, as expert masks of real bleeds draw them rather than as smooth ellipsoids and crescents.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
from scipy import ndimage as ndi

from synthetic.sources import Anatomy

SUBTYPES = ("intraparenchymal", "subdural", "epidural", "subarachnoid", "intraventricular")
SUBTYPE_WEIGHTS = (0.3, 0.2, 0.15, 0.2, 0.15)
VOLUME_ML = {  # log-uniform range of the target volume per subtype (overall 0.05–100 mL)
    "intraparenchymal": (0.3, 100.0), "subdural": (2.0, 100.0), "epidural": (2.0, 60.0),
    "subarachnoid": (0.1, 12.0), "intraventricular": (0.2, 20.0),
}
SMALL_ML = (0.05, 2.0)  # log-uniform range of the small bleeds every subtype also gets
SMALL_SHARE = 0.4  # share of bleeds drawn from SMALL_ML: the sizes where a threshold rule and a model differ
EDGE_MM = 0.8  # width of the soft edge of an occupancy


@dataclass
class Edit:
    """Occupancy ``fraction`` of a source box takes the HU ``hu``; ``blood`` edits are labelled."""

    box: tuple[slice, slice, slice]
    fraction: np.ndarray
    hu: float | np.ndarray
    kind: str
    blood: bool


def _box(anat: Anatomy, center: np.ndarray, radius_mm: float | np.ndarray) -> tuple[slice, slice, slice]:
    radius = np.broadcast_to(np.asarray(radius_mm, float), (3,)) / np.asarray(anat.spacing)
    lo = np.maximum(np.floor(center - radius), 0).astype(int)
    hi = np.minimum(np.ceil(center + radius) + 1, anat.hu.shape).astype(int)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def _offsets(anat: Anatomy, box: tuple[slice, ...], center: np.ndarray) -> list[np.ndarray]:
    """mm offsets (z, y, x) of the box's voxels from ``center`` (index units), as open grids."""
    return [((np.arange(s.start, s.stop) - c) * sp).reshape([-1 if i == k else 1 for k in range(3)])
            for i, (s, c, sp) in enumerate(zip(box, center, anat.spacing, strict=True))]


def _soft(signed_mm: np.ndarray) -> np.ndarray:
    """Occupancy from a signed distance-like value (positive inside), linear over EDGE_MM."""
    return np.clip(signed_mm / EDGE_MM + 0.5, 0.0, 1.0).astype(np.float32)


def _pick(anat: Anatomy, rng: np.random.Generator, mask: np.ndarray) -> np.ndarray | None:
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return None
    return np.array(np.unravel_index(int(rng.choice(idx)), anat.hu.shape), float)


def _deep_parenchyma(anat: Anatomy) -> np.ndarray:
    """Where an intraparenchymal bleed is centred: brain at least 15 mm inside the inner table, off the ventricles."""
    return (anat.inner_dist > 15.0) & ~anat.ventricles & anat.intracranial


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: np.ndarray) -> np.ndarray:
    field = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox)
    return field / (field.std() + 1e-6)


def blood_hu(rng: np.random.Generator, thin: bool = False) -> float:
    """Acute blood 50–90 HU; hyperacute / anaemic 40–60 in a share of cases (SPEC §1)."""
    if rng.random() < 0.15:
        return float(rng.uniform(40.0, 55.0))
    return float(rng.uniform(50.0, 75.0) if thin else rng.uniform(55.0, 88.0))


def _texture(rng: np.random.Generator, hu: float, shape: tuple[int, ...]) -> np.ndarray:
    return (hu + 3.0 * _smooth_noise(rng, shape, np.array([1.5, 1.5, 1.5]))).astype(np.float32)


def intraparenchymal(anat: Anatomy, rng: np.random.Generator, target_ml: float) -> list[Edit] | None:
    center = _pick(anat, rng, _deep_parenchyma(anat))
    if center is None:
        return None
    radius = (3.0 * target_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
    axes = radius * rng.uniform(0.75, 1.3, 3)
    axes *= radius / np.prod(axes) ** (1.0 / 3.0)
    rim = rng.uniform(2.0, 6.0) if rng.random() < 0.8 else 0.0
    box = _box(anat, center, axes * 1.5 + rim + 3.0)
    dz, dy, dx = _offsets(anat, box, center)
    shape = tuple(s.stop - s.start for s in box)
    r = np.sqrt((dz / axes[0]) ** 2 + (dy / axes[1]) ** 2 + (dx / axes[2]) ** 2)
    r = r + 0.22 * _smooth_noise(rng, shape, radius / 2.5 / np.asarray(anat.spacing))  # irregular outline
    inside = anat.intracranial[box] & ~anat.ventricles[box]
    fraction = _soft((1.0 - r) * radius) * inside
    edits = [Edit(box, fraction, _texture(rng, blood_hu(rng), shape), "intraparenchymal", True)]
    if rim > 0:
        oedema = np.clip((1.0 + rim / radius - r) * radius / rim, 0.0, 1.0) * 0.85 * (1.0 - fraction) * inside
        edits.append(Edit(box, oedema.astype(np.float32), float(rng.uniform(10.0, 14.0)), "oedema", False))
    return edits


def lobulated_intraparenchymal(anat: Anatomy, rng: np.random.Generator, target_ml: float) -> list[Edit] | None:
    """An irregular intraparenchymal bleed: the union of 2–4 ellipsoidal lobes around one centre, an
    outline roughened at two scales, in a third of bleeds 1–3 satellite foci beside it, and in 80 % the
    10–14 HU oedema rim of :func:`intraparenchymal`."""
    center = _pick(anat, rng, _deep_parenchyma(anat))
    if center is None:
        return None
    radius = (3.0 * target_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
    n_lobes = int(rng.integers(2, 5))
    n_satellites = int(rng.integers(1, 4)) if rng.random() < 0.33 else 0
    offsets = np.concatenate([rng.normal(0.0, 0.4 * radius, (n_lobes, 3)),
                              _unit(rng, n_satellites) * radius * rng.uniform(1.3, 2.0, (n_satellites, 1))])
    axes = np.concatenate([radius * rng.uniform(0.5, 0.85, (n_lobes, 1)) * rng.uniform(0.6, 1.5, (n_lobes, 3)),
                           radius * rng.uniform(0.12, 0.25, (n_satellites, 1)) * np.ones((n_satellites, 3))])
    box = _box(anat, center, np.abs(offsets).max(axis=0) + axes.max(axis=0) * 1.4 + 3.0)
    dz, dy, dx = _offsets(anat, box, center)
    shape = tuple(s.stop - s.start for s in box)
    r = np.min([np.sqrt(((dz - o[0]) / a[0]) ** 2 + ((dy - o[1]) / a[1]) ** 2 + ((dx - o[2]) / a[2]) ** 2)
                for o, a in zip(offsets, axes, strict=True)], axis=0)
    spacing = np.asarray(anat.spacing)
    r = r + 0.3 * _smooth_noise(rng, shape, radius / 3.0 / spacing) + 0.12 * _smooth_noise(rng, shape, 1.2 / spacing)
    inside = anat.intracranial[box] & ~anat.ventricles[box]
    lobe_mm = 0.6 * radius  # r is relative to lobes of 0.5–0.85 radii: (1 - r) * lobe_mm ≈ mm inside the outline
    fraction = _soft((1.0 - r) * lobe_mm) * inside
    edits = [Edit(box, fraction, _texture(rng, blood_hu(rng), shape), "intraparenchymal", True)]
    rim = rng.uniform(2.0, 6.0) if rng.random() < 0.8 else 0.0
    if rim > 0:  # the oedema rim follows the lobulated outline
        oedema = np.clip((1.0 - r) * lobe_mm / rim + 1.0, 0.0, 1.0) * 0.85 * (1.0 - fraction) * inside
        edits.append(Edit(box, oedema.astype(np.float32), float(rng.uniform(10.0, 14.0)), "oedema", False))
    return edits


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random unit vectors (z, y, x)."""
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True).clip(1e-6)


def _extra_axial(anat: Anatomy, rng: np.random.Generator, target_ml: float, kind: str,
                 wiggle_sd: float = 0.15) -> list[Edit] | None:
    """Subdural crescent (wide, thin) or epidural lens (short, thick) hugging the inner table; its
    thickness varies by ``wiggle_sd`` (relative) over about 6 mm."""
    side = rng.choice([-1.0, 1.0])
    x_mm = np.arange(anat.hu.shape[2]) * anat.spacing[2]
    hemisphere = ((x_mm - anat.midline_x) * side > 20.0)[None, None, :]
    z_low = np.flatnonzero(anat.intracranial.any(axis=(1, 2)))
    z_ok = np.zeros(anat.hu.shape[0], bool)
    z_ok[int(z_low[0] + 0.3 * (z_low[-1] - z_low[0])):] = True
    center = _pick(anat, rng, anat.intracranial & (anat.inner_dist < 2.0) & hemisphere & z_ok[:, None, None])
    if center is None:
        return None
    subdural = kind == "subdural"
    reach = rng.uniform(45.0, 75.0) if subdural else rng.uniform(22.0, 38.0)
    shape_factor = (0.55 if subdural else 0.5) * np.pi
    min_thickness = 1.5 if subdural else 2.5
    reach = min(reach, float(np.sqrt(target_ml * 1000.0 / (shape_factor * min_thickness))))  # small: a short one
    reach = max(reach, 4.0)
    thickness = float(np.clip(target_ml * 1000.0 / (shape_factor * reach ** 2), min_thickness,
                              22.0 if subdural else 30.0))
    box = _box(anat, center, reach + 4.0)
    dz, dy, dx = _offsets(anat, box, center)
    d = np.sqrt(dz ** 2 + dy ** 2 + dx ** 2) / reach
    profile = np.sqrt(np.clip(1.0 - d ** 2, 0.0, None)) if subdural else np.clip(1.0 - d ** 2, 0.0, None)
    shape = tuple(s.stop - s.start for s in box)
    wiggle = np.clip(1.0 + wiggle_sd * _smooth_noise(rng, shape, 6.0 / np.asarray(anat.spacing)), 0.0, None)
    same_side = (((np.arange(box[2].start, box[2].stop) * anat.spacing[2] - anat.midline_x) * side) > 3.0)
    inside = anat.intracranial[box] & same_side[None, None, :]
    fraction = _soft(thickness * profile * wiggle - anat.inner_dist[box]) * inside * (profile > 0)
    return [Edit(box, fraction.astype(np.float32), _texture(rng, blood_hu(rng), shape), kind, True)]


def subdural(anat: Anatomy, rng: np.random.Generator, target_ml: float) -> list[Edit] | None:
    return _extra_axial(anat, rng, target_ml, "subdural")


def epidural(anat: Anatomy, rng: np.random.Generator, target_ml: float) -> list[Edit] | None:
    return _extra_axial(anat, rng, target_ml, "epidural")


def _fill_region(anat: Anatomy, rng: np.random.Generator, target_ml: float, space: np.ndarray,
                 center: np.ndarray, kind: str, layering: bool) -> list[Edit]:
    """Blood filling the ``space`` mask within a ball sized (one correction) to the target volume."""
    radius = 12.0
    for _ in range(2):
        box = _box(anat, center, radius)
        dz, dy, dx = _offsets(anat, box, center)
        ball = _soft(radius - np.sqrt(dz ** 2 + dy ** 2 + dx ** 2))
        occupancy = ndi.gaussian_filter(space[box].astype(np.float32), 0.5) * ball
        if layering:
            occupancy *= _soft(dy + rng.uniform(0.0, 4.0))  # posterior (dependent) part only
        volume = float(occupancy.sum()) * anat.voxel_ml
        radius = float(np.clip(radius * (target_ml / max(volume, 1e-3)) ** (1.0 / 3.0), 2.5, 50.0))
    shape = tuple(s.stop - s.start for s in box)
    return [Edit(box, occupancy.astype(np.float32), _texture(rng, blood_hu(rng, thin=True), shape), kind, True)]


def subarachnoid(anat: Anatomy, rng: np.random.Generator, target_ml: float) -> list[Edit] | None:
    near = (anat.inner_dist < 25.0) if rng.random() < 0.6 else (anat.inner_dist >= 12.0)  # convexity / cisterns
    center = _pick(anat, rng, anat.csf & near)
    if center is None:
        return None
    return _fill_region(anat, rng, target_ml, anat.csf, center, "subarachnoid", layering=False)


def intraventricular(anat: Anatomy, rng: np.random.Generator, target_ml: float) -> list[Edit] | None:
    center = _pick(anat, rng, anat.ventricles)
    if center is None:
        return None
    return _fill_region(anat, rng, target_ml, anat.ventricles, center, "intraventricular",
                        layering=bool(rng.random() < 0.5))


MAKERS: dict[str, Callable[[Anatomy, np.random.Generator, float], list[Edit] | None]] = {
    "intraparenchymal": intraparenchymal, "subdural": subdural, "epidural": epidural,
    "subarachnoid": subarachnoid, "intraventricular": intraventricular,
}


IRREGULAR: dict[str, Callable[[Anatomy, np.random.Generator, float], list[Edit] | None]] = {
    "intraparenchymal": lobulated_intraparenchymal,
    "subdural": partial(_extra_axial, kind="subdural", wiggle_sd=0.35),
    "epidural": partial(_extra_axial, kind="epidural", wiggle_sd=0.3),
}


def make_lesion(anat: Anatomy, rng: np.random.Generator, subtype: str | None = None,
                irregular: bool = False) -> list[Edit]:
    """One haemorrhage (random subtype unless given) with a log-uniform target volume; [] if unplaceable.

    A share of bleeds is small (SMALL_ML) whatever the subtype: most missed or over-painted bleeds in the
    held-out figures were under 2 mL, and real series hold many of them. ``irregular``: the subtypes of
    :data:`IRREGULAR` take their irregular shapes.
    """
    subtype = subtype or str(rng.choice(SUBTYPES, p=SUBTYPE_WEIGHTS))
    low, high = SMALL_ML if rng.random() < SMALL_SHARE else VOLUME_ML[subtype]
    target = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    maker = IRREGULAR.get(subtype, MAKERS[subtype]) if irregular else MAKERS[subtype]
    return maker(anat, rng, target) or []
