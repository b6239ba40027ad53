"""Voxel spacing: a case resampled to the spacing the folds were trained at, and probabilities back.

A network learns the size of things in pixels. INSTANCE's pixels range from 0.37 to 0.60 mm (real
series go to 1 mm), so a model run at another pixel size than it was trained at sees bleeds, bone
and scalp at the wrong scale: the shipped model trained at ~0.9 mm painted 60–137 mL on 0.45 mm
heads. As nnU-Net does, the predictor resamples each case to the manifest's ``spacing_zyx`` (``None``
on an axis keeps it: the 2D family resamples in-plane only), predicts, and brings the probability
back to the input's grid before thresholding, so the mask keeps the input's exact geometry.

Slices much thinner than the folds were trained on (under ``SLAB_SHARE`` of the manifest's
``slab_mm``) are first averaged over a slab of the trained thickness centred on each slice
(:func:`slab_average`), which is what a scanner's thicker reconstruction does: the folds never saw a
thin slice's noise nor its crisp bone edges, and on generated 2 mm series they painted up to 5.7 mL on
normal heads without it (at most 0.05 mL with it). The probability stays on the input's slices.

Downsampling is area-weighted (bilinear with antialiasing): plain bilinear would alias a 0.45 mm
image's noise into the coarser grid, which a model trained on natively coarse pixels never saw.
``torch.nn.functional.interpolate`` does this for 2D; along z (3D family only) it is linear.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional

Spacing = tuple[float | None, float | None, float | None]
TOLERANCE = 0.02  # relative spacing difference below which a case is used as it is (no interpolation)
SLAB_SHARE = 0.65  # slices at least this share of the slab (3.25 of 5 mm) are used as they are (measured: below)


def voxel_ml(spacing_zyx: Sequence[float]) -> float:
    """Volume of one voxel in mL (spacing in mm): every volume this project reports goes through it."""
    return float(np.prod(spacing_zyx)) / 1000.0


def parse_spacing(value: Sequence[float | None] | None) -> Spacing | None:
    """A manifest's ``spacing_zyx``: three positive numbers or nulls (axis kept), or nothing at all."""
    if value is None:
        return None
    if len(value) != 3 or any(v is not None and not float(v) > 0 for v in value):
        raise ValueError(f"spacing_zyx {list(value)!r} must be three positive numbers or nulls (z, y, x)")
    return tuple(None if v is None else float(v) for v in value)  # type: ignore[return-value]


def slab_kernel(thickness_mm: float, dz_mm: float) -> np.ndarray:
    """Box of ``thickness_mm`` in slices ``dz_mm`` apart, fractional at its ends, summing to 1: the
    generator's slab model (a scanner's reconstruction thickness) and the predictor's thin-slice average."""
    half = thickness_mm / dz_mm / 2.0
    k = int(np.ceil(half - 0.5))
    weights = np.clip(half + 0.5 - np.abs(np.arange(-k, k + 1)), 0.0, 1.0)
    return (weights / weights.sum()).astype(np.float32)


def slab_average(hu: np.ndarray, dz_mm: float, slab_mm: float | None) -> np.ndarray:
    """Each slice of ``hu`` (Z, Y, X) replaced by the ``slab_mm`` slab around it (edge slices
    repeated), as float32; ``hu`` itself when there is no slab or its slices are at least
    ``SLAB_SHARE`` of it. A 4 mm slice averaged to 5 mm takes an eighth of each neighbour 4 mm away:
    bone from there laid faintly over the brain under the inner table, which the folds painted as a
    subdural (generated 4 mm normal heads: up to 17 mL averaged, 0.09 mL as they are; at 3.5 mm 2.1
    against 1.7 mL), while at 3 mm and thinner averaging is what keeps normal heads clean (3 mm: 20 mL
    as they are, 0.4 mL averaged)."""
    if slab_mm is None or dz_mm >= slab_mm * SLAB_SHARE or hu.shape[0] < 2:
        return hu
    return ndimage.correlate1d(np.asarray(hu, dtype=np.float32), slab_kernel(slab_mm, dz_mm), axis=0, mode="nearest")


def target_shape(shape: Sequence[int], spacing_zyx: Sequence[float], target: Spacing) -> tuple[int, int, int]:
    """The (z, y, x) size covering the same field of view at the ``target`` spacing."""
    out = []
    for n, have, want in zip(shape, spacing_zyx, target, strict=True):
        keep = want is None or abs(have / want - 1.0) <= TOLERANCE
        out.append(int(n) if keep else max(1, round(n * have / want)))
    return tuple(out)  # type: ignore[return-value]


def resize(volume: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """A (Z, Y, X) float tensor resized to ``shape``: in-plane bilinear (antialiased when shrinking),
    then z linear; the field of view is kept (pixel centres scale, ``align_corners=False``)."""
    z, y, x = (int(s) for s in shape)
    out = volume
    if (y, x) != tuple(out.shape[1:]):
        shrink = y < out.shape[1] or x < out.shape[2]
        out = functional.interpolate(out[None], size=(y, x), mode="bilinear", align_corners=False,
                                     antialias=shrink)[0]
    if z != out.shape[0]:
        out = functional.interpolate(out.permute(1, 2, 0), size=z, mode="linear", align_corners=False).permute(2, 0, 1)
    return out.contiguous()


def to_spacing(array: np.ndarray, spacing_zyx: Sequence[float], target: Spacing | None) -> np.ndarray:
    """``array`` (Z, Y, X) on the ``target`` grid (float32); the same array when nothing changes."""
    if target is None:
        return array
    shape = target_shape(array.shape, spacing_zyx, target)
    if shape == array.shape:
        return array
    return resize(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)), shape).numpy()


def spacing_after(shape_before: Sequence[int], spacing_zyx: Sequence[float],
                  shape_after: Sequence[int]) -> tuple[float, float, float]:
    """The spacing of a resized array (same field of view)."""
    return tuple(float(s) * b / a for s, b, a in zip(spacing_zyx, shape_before, shape_after, strict=True))  # type: ignore[return-value]
