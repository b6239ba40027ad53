"""A fully synthetic head, so the generator works with neither real source installed.

Analytic shapes on a 1 mm grid in canonical LPS order (z inferior→superior, y anterior→posterior,
x right→left): scalp, a skull with diploë and a thicker base, eyes in front, air sinuses, the
cranial cavity with grey and white matter, sulci, the interhemispheric fissure, lateral/third/fourth
ventricles, a venous sinus, cisterns, and the scanner's head holder behind the head. Boundaries are
perturbed by smooth random fields (SciPy filters) so variants differ. HU values follow SPEC §1.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from synthetic.sources import Anatomy

SHAPE = (200, 250, 200)  # z, y, x at 1 mm
SPACING = (1.0, 1.0, 1.0)


def _field(rng: np.random.Generator, sigma_mm: float, amplitude: float) -> np.ndarray:
    """A smooth random field (unit SD × amplitude), made on a 2 mm grid and repeated (zoom is 10× slower)."""
    coarse_shape = tuple((n + 1) // 2 for n in SHAPE)
    noise = ndi.gaussian_filter(rng.standard_normal(coarse_shape).astype(np.float32), sigma_mm / 2.0)
    noise *= amplitude / (noise.std() + 1e-6)
    full = noise.repeat(2, 0).repeat(2, 1).repeat(2, 2)[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    return ndi.uniform_filter(full, 2)


def build_phantom(variant: int = 0) -> Anatomy:
    """One deterministic phantom head per variant."""
    rng = np.random.default_rng(1000 + variant)
    z, y, x = (np.arange(n, dtype=np.float32)[:, None, None] if i == 0 else
               np.arange(n, dtype=np.float32)[None, :, None] if i == 1 else
               np.arange(n, dtype=np.float32)[None, None, :] for i, n in enumerate(SHAPE))
    cz, cy, cx = 110.0, 120.0, 100.0
    a = np.array([68.0, 88.0, 70.0]) * rng.uniform(0.95, 1.05, 3)  # cranial cavity semi-axes (x, y, z)
    wobble = _field(rng, 12.0, 1.5)
    smooth6, smooth3, smooth2 = _field(rng, 6.0, 1.0), _field(rng, 3.0, 1.0), _field(rng, 2.0, 1.0)
    r_cav = np.sqrt(((x - cx) / a[0]) ** 2 + ((y - cy) / a[1]) ** 2 + ((z - cz) / a[2]) ** 2) + wobble / 70.0
    base = cz - 0.62 * a[2] + 8.0 * ((y - cy) / a[1])  # skull base, lower at the back (posterior fossa)
    cavity = (r_cav < 1.0) & (z > base)
    skull_out = (r_cav < 1.0 + 7.5 / 70.0) & (z > base - 7.0)
    scalp = r_cav < 1.0 + 13.0 / 70.0
    face = ((((x - cx) / 62.0) ** 2 + ((y - cy + 25.0) / 80.0) ** 2) < 1.0) & (z < base) & (z > base - 80.0)
    head = scalp | face

    hu = np.full(SHAPE, -1000.0, np.float32)
    hu[head] = 35.0 + 8.0 * smooth6[head]  # scalp and face soft tissue
    fat = head & ~scalp & (smooth3 > 1.6)
    hu[fat] = -90.0
    bone = skull_out & ~cavity
    hu[bone] = 1300.0 + 350.0 * smooth3[bone]
    diploe = bone & (np.abs(r_cav - 1.0 - 3.7 / 70.0) < 1.2 / 70.0)
    hu[diploe] = 550.0 + 100.0 * smooth3[diploe]
    for side in (-1.0, 1.0):  # eyes: vitreous with a lens, anterior
        eye = ((x - cx - side * 32.0) ** 2 + (y - cy + a[1] - 4.0) ** 2 + (z - base + 12.0) ** 2) < 12.0 ** 2
        hu[eye] = 12.0
        lens = ((x - cx - side * 32.0) ** 2 + (y - cy + a[1] + 7.0) ** 2 / 0.2 + (z - base + 12.0) ** 2) < 4.0 ** 2
        hu[lens & eye] = 90.0
    sinus_air = ((((x - cx) / 26.0) ** 2 + ((y - cy + 62.0) / 16.0) ** 2 + ((z - base + 30.0) / 18.0) ** 2) < 1.0)
    hu[sinus_air] = -950.0

    # Distance to the inner table from the ellipsoid radius (an exact transform would cost 5 s per variant).
    inner_dist = np.where(cavity, np.minimum((1.0 - r_cav) * a.min(), z - base), 0.0).astype(np.float32)
    white = cavity & (r_cav + 0.05 * smooth6 < 0.72) & (z > base + 18.0)
    grey = cavity & ~white
    hu[grey] = 37.0 + 2.0 * smooth3[grey]
    hu[white] = 26.0 + 1.5 * smooth2[white]
    sulcal = smooth2
    csf = cavity & ((inner_dist < 2.0) | ((np.abs(sulcal) < 0.16) & (inner_dist < 14.0)))
    csf |= cavity & (np.abs(x - cx) < 1.5) & (inner_dist < 40.0) & (z > cz - 10.0)  # interhemispheric fissure
    cistern = cavity & ((((x - cx) / 14.0) ** 2 + ((y - cy + 5.0) / 12.0) ** 2 + ((z - base - 14.0) / 6.0) ** 2) < 1.0)
    sylvian = cavity & (np.abs(np.abs(x - cx) - 0.72 * a[0]) < 1.5) & (np.abs(z - cz + 12.0) < 20.0) & (
        np.abs(y - cy + 20.0) < 25.0)
    csf |= cistern | sylvian
    ventricles = np.zeros(SHAPE, bool)
    size = rng.uniform(0.8, 1.3)
    for side in (-1.0, 1.0):
        body = ((((x - cx - side * 9.0) / (5.0 * size)) ** 2 + ((y - cy) / 30.0) ** 2
                 + ((z - cz - 8.0) / (9.0 * size)) ** 2) < 1.0)
        horn = ((((x - cx - side * 14.0) / (6.0 * size)) ** 2 + ((y - cy - 28.0) / 12.0) ** 2
                 + ((z - cz + 2.0) / (10.0 * size)) ** 2) < 1.0)
        ventricles |= body | horn
    ventricles |= (np.abs(x - cx) < 2.0 * size) & (np.abs(y - cy) < 12.0) & (np.abs(z - cz + 8.0) < 9.0)  # third
    fourth = (((x - cx) / 6.0) ** 2 + ((y - cy - 30.0) / 5.0) ** 2 + ((z - base - 10.0) / 6.0) ** 2) < 1.0
    ventricles |= fourth
    ventricles &= cavity
    csf &= ~ventricles
    hu[csf | ventricles] = 7.0 + 2.0 * smooth3[csf | ventricles]
    sss = cavity & (np.abs(x - cx) < 4.0) & (inner_dist < 5.0) & (y > cy - 40.0) & (z > cz - 20.0)  # sagittal sinus
    hu[sss] = 45.0
    hu += rng.normal(0.0, 2.0, SHAPE).astype(np.float32)  # fine texture; scanner noise comes later

    holder = (np.abs(np.sqrt((x - cx) ** 2 + (y - cy + 10.0) ** 2) - 112.0) < 2.0) & (y > cy + 20.0) & (z < cz + 30.0)
    hu[holder & (hu < -500)] = 250.0
    return Anatomy("phantom", hu, SPACING, cavity, ventricles, csf, inner_dist, float(cx),
                   extras={"variant": np.array(variant)})
