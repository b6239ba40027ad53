"""Where blood can be: the intracranial space, found from the skull in each axial slice.

An intracranial haemorrhage lies inside the skull. In a slice through the cranium the bone
(> 300 HU, closed over sutures and foramina by a few millimetres) encloses it; filling the
enclosure and removing the bone leaves the brain, CSF and any blood. Slices where the skull is open
(the skull base, the vertex's tangential cut) enclose less than they should, so this is used at the
level of connected components, most of whose voxels lie in closed slices (:mod:`model.postprocess`),
never voxel by voxel.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

BONE_HU = 300.0
CLOSE_MM = 2.0


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


def blood_space(hu: np.ndarray, spacing_zyx: tuple[float, float, float], reach_mm: float = 2.0) -> np.ndarray:
    """The intracranial space widened by ``reach_mm`` into the bone: a bleed against the inner table keeps
    its partial-volume rim. What :func:`model.postprocess.postprocess` checks components against."""
    inside = intracranial(hu, spacing_zyx)
    cross = ndimage.generate_binary_structure(2, 1)[None]
    return ndimage.binary_dilation(inside, cross, iterations=max(1, round(reach_mm / float(spacing_zyx[1]))))
