"""Where blood can be: the intracranial space, found from the skull in each axial slice.

An intracranial haemorrhage lies inside the skull. Two spaces, for two uses:

- :func:`intracranial`: what the bone (> 300 HU, closed over sutures by a few millimetres) encloses,
  minus the bone. Tight, for the HU-rule baseline (:mod:`bench.hu_rule`), but empty in any slice where
  the skull is open (the skull base, thin temporal squama in a thick slab).
- :func:`blood_space`: the convex hull of the head's bone, for post-processing's extracranial filter. Loose
  at the skull base, but it never loses the blood of an open slice.

And one place where blood seldom is and a thick slice makes brain look like it: :func:`on_bone_below`,
directly above the floor of the skull (orbital roof, sphenoid, petrous ridge).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from model.head import head_mask

BONE_HU = 300.0
CLOSE_MM = 2.0
FLOOR_MM = 7.5  # slices whose centre lies this far below a voxel are its floor: a 5 mm slab's far edge


def intracranial(hu: np.ndarray, spacing_zyx: tuple[float, float, float], clearance_mm: float = 0.0) -> np.ndarray:
    """(Z, Y, X) bool: per slice, what the closed skull encloses, minus bone and ``clearance_mm`` from it."""
    pixel = float(spacing_zyx[1])
    cross = ndimage.generate_binary_structure(2, 1)
    inside = np.zeros(hu.shape, dtype=bool)
    for z, section in enumerate(hu):
        bone = section > BONE_HU
        if not bone.any():
            continue
        bone = ndimage.binary_closing(bone, cross, iterations=max(1, round(CLOSE_MM / pixel)))
        inside[z] = ndimage.binary_fill_holes(bone) & ~bone
    if clearance_mm > 0:
        inside = ndimage.binary_erosion(inside, cross[None], iterations=max(1, round(clearance_mm / pixel)))
    return inside


def blood_space(hu: np.ndarray) -> np.ndarray:
    """(Z, Y, X) bool: per slice, the convex hull of the skull (bone > 300 HU), bone included.

    What :func:`model.postprocess.postprocess` checks components against. A hull, not the filled
    closure of :func:`intracranial`: that leaks out wherever the skull is open (foramen magnum,
    petrous bone, the orbits, thin temporal squama read under 300 HU in a 5 mm slab) and left 30 %
    of the blood of 60 generated training heads outside it, where the hull leaves none. Scalp,
    temporalis and the soft tissue behind and beside the skull lie outside the hull; facial soft
    tissue between the facial bones at the skull base does not. A hull needs no pixel size.

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
        inside[z] = np.asarray(canvas, dtype=bool)
    return inside


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
