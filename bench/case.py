"""A generated head CT for timing: the benchmark must run anywhere, without patient data.

Geometry follows a real non-contrast head CT at 0.45 × 0.45 mm in-plane: a head of about
180 × 150 mm (brain ≈ 30 HU inside a ≈ 1000 HU skull) centred in a 512 × 512 field of air, a
patient table below it (so the head box is as wide as a real scan's), two 60–80 HU blobs as
bleeds, and 5 HU noise. Only the share of the field the head covers matters for speed.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

SPACING_XYZ = (0.45, 0.45, 5.0)


def head_ct(slices: int = 32, size: int = 512, seed: int = 0) -> np.ndarray:
    """int16 HU volume (z, y, x) of ``slices`` axial slices of ``size`` × ``size``."""
    rng = np.random.default_rng(seed)
    scale = size / 512
    z = np.linspace(-0.8, 0.8, slices)[:, None, None]
    y = np.arange(size)[None, :, None] - 240 * scale
    x = np.arange(size)[None, None, :] - 256 * scale
    shrink = np.sqrt(1 - z**2)  # the head narrows towards the vertex and the skull base
    radius = np.sqrt((y / (200 * scale * shrink)) ** 2 + (x / (165 * scale * shrink)) ** 2)
    hu = np.full((slices, size, size), -1000.0)
    hu[np.broadcast_to(radius < 1.0, hu.shape)] = 1000.0
    hu[np.broadcast_to(radius < 0.93, hu.shape)] = 30.0
    for (cz, cy, cx, r), value in zip(((0.1, -60, 50, 28), (-0.3, 70, -60, 18)), (70.0, 62.0), strict=True):
        blob = ((z - cz) / 0.25) ** 2 + ((y - cy * scale) / (r * scale)) ** 2 + ((x - cx * scale) / (r * scale)) ** 2
        hu[np.broadcast_to(blob < 1.0, hu.shape)] = value
    table = slice(int(462 * scale), int(474 * scale)), slice(int(96 * scale), int(416 * scale))
    hu[:, table[0], table[1]] = 150.0
    hu += rng.normal(0.0, 5.0, hu.shape)
    return hu.astype(np.int16)


def to_image(hu: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing(SPACING_XYZ)
    return image
