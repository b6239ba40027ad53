"""Where blood can be: the intracranial space, found from the skull in each axial slice.

An intracranial haemorrhage lies inside the skull. Two spaces, for two uses:

- :func:`intracranial`: what the bone (> 300 HU, closed over sutures by a few millimetres) encloses,
  minus the bone. Tight, for the HU-rule baseline (:mod:`bench.hu_rule`), but empty in any slice where
  the skull is open (the skull base, thin temporal squama in a thick slab).
- :func:`blood_space`: for post-processing's extracranial filter: the convex hull of the head's bone,
  which never loses the blood of an open slice, narrowed by :func:`cranial_cavity` to the soft tissue
  the brain reaches without squeezing through the bone.

And one place where blood seldom is and a thick slice makes brain look like it: :func:`on_bone_below`,
directly above the floor of the skull (orbital roof, sphenoid, petrous ridge). Also the skull's size,
:func:`skull_extent_mm`, which tells a wrong pixel spacing (:mod:`model.review`).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from model.head import bounding_box, head_mask

BONE_HU = 300.0
CLOSE_MM = 2.0
WALL_HU = 200.0  # the cavity's walls: bone, and thin bone a 5 mm slab averages down to 200–300 HU
SOFT_HU = -30.0  # air and fat are walls too: blood, brain and CSF lie above this
NARROW_MM = 6.0  # passages narrower than twice this between brain and soft tissue outside are cut
FILL_SLICES = 16  # slices filled at once by fill_holes
SEED_SHARE = 0.3  # slices whose closed skull holds at least this share of the largest one seed the cavity
FLOOR_MM = 7.5  # slices whose centre lies this far below a voxel are its floor: a 5 mm slab's far edge


def intracranial(hu: np.ndarray, spacing_zyx: tuple[float, float, float], clearance_mm: float = 0.0) -> np.ndarray:
    """(Z, Y, X) bool: per slice, what the closed skull encloses, minus bone and ``clearance_mm`` from it."""
    pixel = float(spacing_zyx[1])
    cross = ndimage.generate_binary_structure(2, 1)
    bone = np.zeros(hu.shape, dtype=bool)
    for z, section in enumerate(hu):
        dense = section > BONE_HU
        if dense.any():
            bone[z] = ndimage.binary_closing(dense, cross, iterations=max(1, round(CLOSE_MM / pixel)))
    inside = fill_holes(bone) & ~bone
    if clearance_mm > 0:
        inside = ndimage.binary_erosion(inside, cross[None], iterations=max(1, round(clearance_mm / pixel)))
    return inside


def blood_space(hu: np.ndarray, spacing_zyx: tuple[float, float, float],
                hull: np.ndarray | None = None) -> np.ndarray:
    """(Z, Y, X) bool: where post-processing's extracranial filter lets a finding be: the skull's hull
    (:func:`skull_hull`; ``hull`` when the caller has it already) narrowed to the cranial cavity
    (:func:`cranial_cavity`) where one is found.

    The hull holds the facial skeleton too: in the skull-base slices the temporalis and masseter
    between the zygomatic arches, and the soft tissue among the facial bones, lie inside it. A fold
    that had never seen a head painted 5 mL there on its normal heads; the cavity left 2 mL
    (docs/training.md, "The cranial cavity").
    """
    hull = skull_hull(hu) if hull is None else hull
    cavity = cranial_cavity(hu, spacing_zyx, hull)
    return hull if cavity is None else cavity


def skull_hull(hu: np.ndarray) -> np.ndarray:
    """(Z, Y, X) bool: per slice, the convex hull of the skull (bone > 300 HU), bone included.

    A hull, not the filled closure of :func:`intracranial`: that leaks out wherever the skull is open
    (foramen magnum, petrous bone, the orbits, thin temporal squama read under 300 HU in a 5 mm slab)
    and left 30 % of the blood of 60 generated training heads outside it, where the hull leaves none.
    Scalp, temporalis and the soft tissue behind and beside the skull lie outside the hull; facial
    soft tissue between the facial bones at the skull base does not. A hull needs no pixel size.

    Only the head's own bone counts (:func:`model.head.head_mask`): a table, head holder or strap
    denser than 300 HU at the edge of the field of view would stretch the hull over the scalp and
    the temporalis beside the skull. Every generated InVesalius head carries such lines; with them
    counted, a fold that had never seen that head kept 10.3 mL of soft tissue on its normal heads,
    with them left out 5.3 mL (docs/training.md, "The head's own bone").
    """
    bone_of_head = (hu > BONE_HU) & head_mask(hu)
    inside = np.zeros(hu.shape, dtype=bool)
    for z, section in enumerate(bone_of_head):
        bone = np.argwhere(section)
        if len(bone) < 3:
            continue
        try:
            corners = bone[ConvexHull(bone).vertices]
        except QhullError:  # all bone on one line
            continue
        canvas = Image.new("1", (section.shape[1], section.shape[0]))
        ImageDraw.Draw(canvas).polygon([(float(x), float(y)) for y, x in corners], fill=1, outline=1)
        inside[z] = np.asarray(canvas.convert("L")) > 0  # mode "1" reads as bool bytes of 255, not 1
    return inside


def cranial_cavity(hu: np.ndarray, spacing_zyx: tuple[float, float, float], hull: np.ndarray) -> np.ndarray | None:
    """(Z, Y, X) bool: the soft tissue inside ``hull`` that the brain reaches in 3D without passing
    through a gap narrower than 2 × ``NARROW_MM`` in its walls (bone and air); ``None`` with fewer than
    three slices or no slice where the skull is closed around soft tissue (the hull is all there is).

    The brain is found where the skull is closed (:func:`intracranial`), and followed slice to slice
    down into the fossae. The temporalis and masseter touch it only through the thin squama, the
    fossa floors and the fissures, which a 5 mm slab averages below bone's density: an opening by
    reconstruction (erode the soft tissue by ``NARROW_MM`` in-plane, keep the eroded parts connected
    to the brain, grow them back by as much) cuts those passages, and the growth brings back the brain
    and blood out to the inner table. Not on one slice or two: there the brain of a skull-base slice
    is islands that only the slices above join.
    """
    box = bounding_box(hull)
    if box is None or hu.shape[0] < 3:
        return None
    soft = (hu[box] > SOFT_HU) & (hu[box] < WALL_HU) & hull[box]
    closed = intracranial(hu[box], spacing_zyx)
    area = closed.sum(axis=(1, 2))
    seeds = closed & (area >= SEED_SHARE * area.max())[:, None, None]
    core = _joined(np.stack([_within(section, spacing_zyx, inner=True) for section in soft]), seeds)
    if not core.any():
        return None
    cavity = np.zeros_like(hull)
    cavity[box] = fill_holes(np.stack([_within(section, spacing_zyx, inner=False) for section in core]) & soft)
    return cavity & hull


def _joined(mask: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The connected components of ``mask`` (faces only: slices join where they overlap) that hold a
    seed; its own function so that the labels, 4 bytes a voxel, are freed before the next step."""
    labels, _ = ndimage.label(mask)
    joined = np.unique(labels[seeds & mask])
    return np.isin(labels, joined[joined > 0])


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """(Z, Y, X) bool: each slice of ``mask`` with its holes filled, as :func:`scipy.ndimage.binary_fill_holes`
    does per slice (the background 4-connected to the slice's edge stays), but by labelling the
    background, where that propagates from the edge pixel by pixel: 0.2 s against 0.5 s for a 512² × 38
    case on the 2-core Xeon. ``FILL_SLICES`` slices at a time, so the labels (4 bytes a voxel) stay small."""
    section_cross = np.zeros((3, 3, 3), dtype=bool)
    section_cross[1] = ndimage.generate_binary_structure(2, 1)
    filled = np.empty_like(mask, dtype=bool)
    for start in range(0, len(mask), FILL_SLICES):
        labels, _ = ndimage.label(~mask[start:start + FILL_SLICES], section_cross)
        edge = np.unique(np.concatenate([labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1]], axis=None))
        filled[start:start + FILL_SLICES] = ~np.isin(labels, edge[edge > 0])
    return filled


def _within(section: np.ndarray, spacing_zyx: tuple[float, float, float], inner: bool) -> np.ndarray:
    """One slice eroded (``inner``: voxels deeper than ``NARROW_MM`` in ``section``) or dilated
    (voxels within ``NARROW_MM`` of it) by a disc, through the distance transform: one pass per slice,
    where a structuring element 13–27 pixels wide is applied once per pixel of it."""
    sampling = (float(spacing_zyx[1]), float(spacing_zyx[2]))
    if inner:
        return ndimage.distance_transform_edt(section, sampling=sampling) > NARROW_MM
    if not section.any():
        return section
    return ndimage.distance_transform_edt(~section, sampling=sampling) <= NARROW_MM


def on_bone_below(hu: np.ndarray, spacing_z: float) -> np.ndarray:
    """(Z, Y, X) bool: voxels with bone (> 300 HU) at the same row and column in one of the slices whose
    centre lies up to ``FLOOR_MM`` below (at least the next one). ``hu`` in canonical LPS order
    (:mod:`model.io`): the slice index grows towards the vertex, so "below" is a lower index. In a
    series of 3.75 mm or thicker that is the next slice, whose slab reaches 7.5 mm down from a 5 mm
    slice's centre; a thin series, which the folds see as 5 mm slabs, looks as far (six 1.25 mm slices).

    Why: in a 5 mm slice the brain just above a fossa floor is averaged with the bone under it and
    reads 60–100 HU, blood's density. On a brain the shipped folds never saw (the generator's atlas
    heads) most of their false findings lay there: the share of a false component's voxels with bone in
    the slice below had a median of 0.66, against at most 0.29 for every true finding on three held-out
    sets (docs/training.md, "The floor rule"). A haemorrhage lying mostly on the floor of the skull is
    the rare case this rule gives up.
    """
    floor = np.zeros(hu.shape, dtype=bool)
    bone = hu > BONE_HU
    for step in range(1, max(1, int(FLOOR_MM // float(spacing_z))) + 1):
        if step >= len(hu):
            break
        floor[step:] |= bone[:-step]
    return floor


MIN_SKULL_PIXELS = 50  # a slice whose largest piece of bone is smaller has no skull to measure (vertex tip)


def skull_extent_mm(hu: np.ndarray, spacing_zyx: tuple[float, float, float]) -> float | None:
    """How far across the skull reaches, in mm: per slice the larger of the front-to-back and side-to-side
    spans of its largest connected piece of bone (so a head holder's rails or a bright cable do not
    count; found at half resolution), the median over the slices with one; ``None`` without any. The
    real heads measure 132 mm (InVesalius) and 150 mm (the pydicom slice), 36 generated heads 119–174 mm,
    so a head far larger says the pixel spacing is wrong."""
    spans = []
    for plane in hu:
        labels, count = ndimage.label(plane[::2, ::2] > BONE_HU, structure=np.ones((3, 3), dtype=bool))
        if count == 0:
            continue
        sizes = np.bincount(labels.ravel())[1:]
        largest = int(sizes.argmax())
        if 4 * sizes[largest] < MIN_SKULL_PIXELS:
            continue
        rows, cols = ndimage.find_objects(labels, max_label=largest + 1)[largest]
        spans.append(2 * max((rows.stop - rows.start) * spacing_zyx[1], (cols.stop - cols.start) * spacing_zyx[2]))
    return float(np.median(spans)) if spans else None
