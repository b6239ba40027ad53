"""Per-case geometry and scanner variation: the INSTANCE-like output grid, pose, slab averaging, noise.

The output grid is axial LPS with identity direction: ``size`` × ``size`` pixels of 0.37–0.60 mm
(proportionally coarser for smaller ``size``), slices 4.4–10 mm thick. A case maps output points to
the source by a small elastic (B-spline) warp, then a rigid tilt with isotropic scaling 0.9–1.1.
Slice thickness is modelled by averaging the source over the slab (a box of the slice thickness along
z, in source voxels) before sampling each slice centre: partial volume of the inner table and of thin
blood follow from it. The two operations are linear, so a lesion's change can be slab-averaged and
resampled on its own box and added (:func:`resample_box`), at a fraction of the cost of the volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from synthetic.sources import Anatomy

REFERENCE_SIZE = 512


@dataclass
class CaseParams:
    """Everything random about one case's geometry and scanner."""

    size: int
    spacing_xy: float
    thickness: float
    n_slices: int
    scale: float
    angles_deg: tuple[float, float, float]  # about x (pitch), y (roll), z (yaw)
    shift_mm: tuple[float, float, float]
    elastic_mm: float
    noise_sd: float
    offset_hu: float
    streaks: bool


def sample_params(anat: Anatomy, rng: np.random.Generator, size: int = REFERENCE_SIZE,
                  max_slices: int = 70, thickness_mm: float | None = None) -> CaseParams:
    """Random case parameters; the slice count is what the source's head extent allows (≤ ``max_slices``).

    ``thickness_mm`` fixes the slice thickness (a thin-slice series; the random draws stay the same)
    and scales the noise by √(5 / thickness), at most 2×: a scanner's noise at the same dose.
    """
    drawn = 5.0 if rng.random() < 0.55 else float(rng.uniform(4.4, 10.0))
    thickness = thickness_mm or drawn
    scale = float(rng.uniform(0.9, 1.1))
    zs = np.flatnonzero(anat.intracranial.any(axis=(1, 2))) * anat.spacing[0]
    extent = (zs[-1] - zs[0] + 25.0) * scale  # brain plus skull base and vertex
    n_slices = int(np.clip(round(extent / thickness), 1, max_slices))
    head = np.argwhere(anat.hu.max(axis=0) > -300) * np.asarray(anat.spacing[1:])
    head_mm = float((head.max(axis=0) - head.min(axis=0)).max()) * scale + 12.0
    spacing = float(rng.uniform(0.37, 0.60)) if rng.random() < 0.5 else float(rng.normal(0.45, 0.03))
    spacing = max(float(np.clip(spacing, 0.37, 0.60)) * REFERENCE_SIZE / size, head_mm / size)
    noise_scale = min(float(np.sqrt(5.0 / thickness_mm)), 2.0) if thickness_mm else 1.0
    return CaseParams(size, spacing, thickness, n_slices, scale,
                      tuple(float(a) for a in rng.normal(0.0, [10.0, 3.0, 4.0])),  # pitch: gantry tilt, chin position
                      tuple(float(s) for s in rng.normal(0.0, [3.0, 6.0, 6.0])),
                      float(rng.uniform(0.5, 2.5)), float(rng.uniform(2.0, 8.0)) * noise_scale,
                      float(rng.normal(0.0, 3.0)),
                      bool(rng.random() < 0.3))


def source_center(anat: Anatomy) -> np.ndarray:
    """(x, y, z) mm of the intracranial space's centre: the output grid's centre maps here."""
    idx = np.argwhere(anat.intracranial[::2, ::2, ::2]) * 2
    lo, hi = idx.min(axis=0), idx.max(axis=0)
    center_zyx = (lo + hi) / 2.0 * np.asarray(anat.spacing)
    center_zyx[0] = (lo[0] * anat.spacing[0] + hi[0] * anat.spacing[0]) / 2.0 - 4.0
    return center_zyx[::-1]


def output_grid(center: np.ndarray, p: CaseParams) -> sitk.Image:
    """The empty output image: canonical LPS, identity direction, centred on ``center``."""
    size = (p.size, p.size, p.n_slices)
    spacing = (p.spacing_xy, p.spacing_xy, p.thickness)
    image = sitk.Image(size, sitk.sitkUInt8)
    image.SetSpacing(spacing)
    image.SetOrigin(tuple(float(c - (n - 1) / 2.0 * s) for c, n, s in zip(center, size, spacing, strict=True)))
    return image


def case_transform(grid: sitk.Image, center: np.ndarray, p: CaseParams, rng: np.random.Generator,
                   fine_warp_mm: float = 0.0) -> tuple[sitk.AffineTransform, sitk.Transform]:
    """Output point → source point: B-spline warp on the output domain, then tilt, scale and shift.

    ``fine_warp_mm`` > 0 adds a finer warp first (control points about 25 mm apart in-plane, their
    displacements of that SD), which reshapes gyri, sulci and ventricles locally: more anatomies from
    the same sources. Its draws come after the default ones, so 0 leaves every case as it was.

    Returns the affine part (to bound boxes) and the whole mapping baked into a displacement field on
    a grid 16 pixels apart: resampling 512² × 30 voxels through it takes ~2 s, through the B-spline 30 s.
    """
    rigid = sitk.Euler3DTransform()
    rigid.SetCenter(tuple(float(c) for c in center))
    rigid.SetRotation(*(float(np.deg2rad(a)) for a in p.angles_deg))
    affine = sitk.AffineTransform(3)
    affine.SetCenter(tuple(float(c) for c in center))
    affine.SetMatrix(tuple((np.asarray(rigid.GetMatrix()).reshape(3, 3) / p.scale).ravel()))
    affine.SetTranslation(p.shift_mm)
    warp = sitk.BSplineTransformInitializer(grid, [3, 3, 2])
    warp.SetParameters(tuple(rng.normal(0.0, p.elastic_mm, len(warp.GetParameters()))))
    warps: list[sitk.Transform] = [affine, warp]  # the last one is applied first
    if fine_warp_mm > 0:
        extent_mm = np.asarray(grid.GetSize()) * np.asarray(grid.GetSpacing())
        mesh = [max(2, round(float(e) / 25.0)) for e in extent_mm[:2]] + [max(1, round(float(extent_mm[2]) / 40.0))]
        fine = sitk.BSplineTransformInitializer(grid, mesh)
        fine.SetParameters(tuple(rng.normal(0.0, fine_warp_mm, len(fine.GetParameters()))))
        warps.append(fine)
    composite = sitk.CompositeTransform(warps)
    step = 16
    size = [max(2, int(np.ceil((n - 1) / step)) + 1) for n in grid.GetSize()[:2]] + [grid.GetSize()[2]]
    spacing = [grid.GetSpacing()[0] * step, grid.GetSpacing()[1] * step, grid.GetSpacing()[2]]
    field = sitk.TransformToDisplacementField(composite, sitk.sitkVectorFloat64, size, grid.GetOrigin(), spacing,
                                              grid.GetDirection())
    return affine, sitk.DisplacementFieldTransform(field)


def _image(array: np.ndarray, anat: Anatomy, start: tuple[int, int, int] = (0, 0, 0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(anat.spacing[::-1])
    image.SetOrigin(tuple(float(i * s) for i, s in zip(start[::-1], anat.spacing[::-1], strict=True)))
    return image


def resample_anatomy(anat: Anatomy, grid: sitk.Image, transform: sitk.Transform, kernel: np.ndarray) -> np.ndarray:
    """The slab-averaged source sampled at every output voxel (float32 HU, air outside the source)."""
    slab = ndi.correlate1d(anat.hu, kernel, axis=0, mode="nearest")
    out = sitk.Resample(_image(slab, anat), grid, transform, sitk.sitkLinear, -1024.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def output_box(anat: Anatomy, box: tuple[slice, ...], grid: sitk.Image, affine: sitk.AffineTransform,
               margin_mm: float = 12.0) -> tuple[slice, slice, slice] | None:
    """The output voxels a source box can reach (its corners through the inverse pose, plus a margin)."""
    inverse = affine.GetInverse()
    corners = [(x * anat.spacing[2], y * anat.spacing[1], z * anat.spacing[0])
               for z in (box[0].start, box[0].stop) for y in (box[1].start, box[1].stop)
               for x in (box[2].start, box[2].stop)]
    points = np.array([inverse.TransformPoint(c) for c in corners])
    spacing, origin, size = np.array(grid.GetSpacing()), np.array(grid.GetOrigin()), np.array(grid.GetSize())
    lo = np.floor((points.min(axis=0) - margin_mm - origin) / spacing).astype(int)
    hi = np.ceil((points.max(axis=0) + margin_mm - origin) / spacing).astype(int) + 1
    lo, hi = np.maximum(lo, 0), np.minimum(hi, size)
    if np.any(hi <= lo):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(lo[::-1], hi[::-1], strict=True))


def resample_box(array: np.ndarray, box: tuple[slice, ...], anat: Anatomy, grid: sitk.Image,
                 transform: sitk.Transform, kernel: np.ndarray, out_box: tuple[slice, ...]) -> np.ndarray:
    """A source-box array (zero outside it), slab-averaged and sampled on an output sub-box."""
    pad = len(kernel) // 2
    padded = np.pad(array, ((pad, pad), (0, 0), (0, 0)))
    slab = ndi.correlate1d(padded, kernel, axis=0, mode="constant")
    start = (box[0].start - pad, box[1].start, box[2].start)
    sub = sitk.Image([s.stop - s.start for s in out_box[::-1]], sitk.sitkUInt8)
    sub.SetSpacing(grid.GetSpacing())
    sub.SetOrigin(grid.TransformIndexToPhysicalPoint([s.start for s in out_box[::-1]]))
    out = sitk.Resample(_image(slab, anat, start), sub, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def add_scanner_effects(ct: np.ndarray, p: CaseParams, rng: np.random.Generator) -> list[str]:
    """Correlated noise, a small HU offset and (occasionally) beam-hardening streaks near the skull base."""
    noise = ndi.gaussian_filter(rng.standard_normal(ct.shape).astype(np.float32), (0.0, 0.7, 0.7))
    ct += noise * (p.noise_sd / (noise.std() + 1e-6)) + p.offset_hu
    effects = []
    if p.streaks:
        effects.append("streaks")
        low = max(1, ct.shape[0] // 4)
        yy, xx = np.mgrid[: ct.shape[1], : ct.shape[2]].astype(np.float32)
        for z in range(low):
            dense = ndi.gaussian_filter(ct[z], 3.0)
            if dense.max() < 700:
                continue
            cy, cx = np.unravel_index(int(np.argmax(dense)), dense.shape)
            head = ct[z] > -200
            for angle in rng.uniform(0, np.pi, 4):
                across = (xx - cx) * np.sin(angle) - (yy - cy) * np.cos(angle)
                along = np.hypot(xx - cx, yy - cy) * p.spacing_xy
                streak = rng.uniform(15, 45) * np.exp(-0.5 * (across * p.spacing_xy / 0.8) ** 2) * np.exp(-along / 60.0)
                ct[z] += np.where(head, streak * rng.choice([-1.0, 1.0]), 0.0)
    return effects
