"""The accuracy baseline: an HU-window rule with connected-component clean-up, no learning.

What a radiologist's first script would do: blood is 50–90 HU, it lies inside the skull, and specks
are noise. Per slice, the intracranial space is what the skull (bone > 300 HU, closed) encloses
(:func:`model.anatomy.intracranial`), shrunk by ``BONE_CLEARANCE_MM`` so that the inner table's
partial volume is not taken for blood; inside it, voxels of the 3 × 3 median-smoothed CT within
``BLOOD_HU`` are kept, and 3D connected components smaller than ``MIN_COMPONENT_ML`` are dropped.
The rule has no notion of calcifications, dense sinuses or dural sheets (they pass when within the
window), which is the point of comparing.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from model.anatomy import intracranial
from model.postprocess import remove_small_components
from model.spacing import voxel_ml

BLOOD_HU = (50.0, 90.0)
BONE_CLEARANCE_MM = 2.0
MIN_COMPONENT_ML = 0.05


def hu_rule_mask(hu: np.ndarray, spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """uint8 0/1 haemorrhage mask of a (Z, Y, X) HU volume by the rule above."""
    smooth = ndimage.median_filter(hu, size=(1, 3, 3))
    blood = (smooth >= BLOOD_HU[0]) & (smooth <= BLOOD_HU[1]) & intracranial(hu, spacing_zyx, BONE_CLEARANCE_MM)
    return remove_small_components(blood, MIN_COMPONENT_ML / voxel_ml(spacing_zyx)).astype(np.uint8)
