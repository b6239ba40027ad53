"""Reading and writing images, and the canonical orientation (the folder layouts: :mod:`model.layouts`).

The network always sees axial slices in one orientation (LPS: array axes z inferior→superior,
y anterior→posterior, x right→left), whatever order the file stored its axes in; the mask is
turned back to the file's own storage order and given the file's exact geometry.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from model.atomic import atomic_path
from model.gantry_tilt import TILT_METADATA
from model.slice_spacing import RESTACK_METADATA

CANONICAL = "LPS"
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")  # CT and mask files, wherever the project reads them
GC_SUFFIXES = (".mha", ".tif", ".tiff")  # what grand-challenge hands an algorithm


class CaseError(Exception):
    """A problem with one case, carrying the one-line message shown to the user."""


def case_name(path: Path) -> str:
    """The file name without its image extension (``001.nii.gz`` → ``001``)."""
    name = path.name
    for suffix in (*IMAGE_SUFFIXES, *GC_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


MAX_VOXELS = 400_000_000  # 1024 × 1024 × 380: larger would exhaust the container's memory
# A 2D file is one axial slice whose thickness it does not say. Millilitres (the size rules, the volume
# reported) need one: INSTANCE's slices are 5 mm, and so are most thick-slice head CTs.
ONE_SLICE_MM = 5.0
AIR_HU = -200.0  # a head CT in Hounsfield units always holds air (−1000) or padding below this


def _itk_reason(err: RuntimeError, path: Path) -> str:
    """The informative part of an ITK exception, on one line, naming the file without its folder."""
    lines = [line.strip() for line in str(err).replace(str(path), path.name).splitlines() if line.strip()]
    reason = next((line for line in reversed(lines) if "ITK ERROR" in line or "rror" in line),
                  lines[-1] if lines else "unknown error")
    return reason.split("): ", 1)[-1][:160]


def _check_nifti(path: Path) -> None:
    """Refuse what ITK would silently repair in a NIfTI file: zero or negative pixdim spacing,
    data shorter than the header says, and NaN or infinite voxels.

    ITK reads a truncated ``.nii.gz`` or a short ``.nii`` without complaint (missing voxels become
    zeros), replaces a zero pixdim by 1, and reads NaN as 0. The official metrics take spacing from
    pixdim, so a file with bad pixdim could not be scored either.
    """
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        nifti = nib.load(str(path))
        with opener(path, "rb") as stream:  # nibabel's loaded header is already repaired: read it raw
            header = type(nifti.header).from_fileobj(stream, check=False)
    except (nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError, OSError, EOFError,
            ValueError) as err:
        raise CaseError(f"{path.name}: not a valid NIfTI file ({str(err).splitlines()[0][:120]})") from None
    pixdim = [float(v) for v in header["pixdim"][1:4]]
    if not all(np.isfinite(v) and v > 0 for v in pixdim):
        raise CaseError(f"{path.name}: voxel spacing (pixdim) must be positive, found {pixdim}")
    expected = nifti.dataobj.offset + int(np.prod(nifti.shape)) * nifti.get_data_dtype().itemsize
    try:
        with opener(path, "rb") as stream:
            available = sum(len(block) for block in iter(lambda: stream.read(1 << 22), b""))
    except (EOFError, OSError, zlib.error) as err:
        raise CaseError(f"{path.name}: compressed data is truncated or corrupt ({err})") from None
    if available < expected:
        raise CaseError(f"{path.name}: file ends after {available} bytes but its header promises {expected} "
                        "(truncated?)")
    if nifti.get_data_dtype().kind == "f":
        bad = int((~np.isfinite(np.asarray(nifti.dataobj))).sum())
        if bad:
            raise CaseError(f"{path.name}: {bad} voxels are NaN or infinite")


def read_image(path: Path) -> sitk.Image:
    """Read a 3D (or 2D: one axial slice) single-channel image, or raise CaseError saying in one line why not.

    The header is checked before any voxel is read, so a header promising an enormous volume
    is refused instead of exhausting memory.
    """
    if not path.is_file():
        raise CaseError(f"{path.name}: not a regular file")
    if path.stat().st_size == 0:
        raise CaseError(f"{path.name}: empty file")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise CaseError(f"{path.name}: not a readable image ({_itk_reason(err, path)})") from None
    if reader.GetNumberOfComponents() != 1:
        raise CaseError(f"{path.name}: has {reader.GetNumberOfComponents()} components per voxel (a vector, "
                        "colour or 4D image), expected a single-channel CT")
    size = reader.GetSize()
    if reader.GetDimension() not in (2, 3) or (len(size) > 3 and any(s > 1 for s in size[3:])):
        raise CaseError(f"{path.name}: is {reader.GetDimension()}D with size {size}, expected a 3D CT volume "
                        "or one 2D slice")
    if int(np.prod(size)) > MAX_VOXELS:
        raise CaseError(f"{path.name}: {size} is {int(np.prod(size)):,} voxels, more than the {MAX_VOXELS:,} "
                        "this container handles")
    if not all(np.isfinite(v) and v > 0 for v in reader.GetSpacing()):
        raise CaseError(f"{path.name}: voxel spacing must be positive, found {reader.GetSpacing()}")
    if path.name.lower().endswith((".nii", ".nii.gz")):
        _check_nifti(path)
    try:
        return reader.Execute()
    except RuntimeError as err:
        raise CaseError(f"{path.name}: not a readable image ({_itk_reason(err, path)})") from None


def check_hounsfield(hu: np.ndarray, path: Path | str) -> None:
    """Refuse voxel values that cannot be a head CT in Hounsfield units (NaN, no air at all).

    ``path`` names the case in the message: a file (by its name), or a label such as a DICOM series'.
    """
    name = path.name if isinstance(path, Path) else path
    finite = np.isfinite(hu)
    if not finite.all():
        raise CaseError(f"{name}: {int((~finite).sum())} voxels are NaN or infinite")
    low, high = float(hu.min()), float(hu.max())
    if low > AIR_HU:
        raise CaseError(f"{name}: no air in the volume (values {low:g} to {high:g}); "
                        "this does not look like a CT in Hounsfield units")


@dataclass(frozen=True)
class LoadedCase:
    """A CT as read (``image``: its own storage order and geometry) and as the networks see it.

    It keeps what it takes to undo the canonical view, so a mask computed on ``hu`` goes back to the
    input's exact geometry with :meth:`mask_image`.
    """

    image: sitk.Image
    canonical: sitk.Image
    hu: np.ndarray  # float32 (z, y, x) Hounsfield units, canonical order

    @classmethod
    def of(cls, image: sitk.Image, label: Path | str) -> LoadedCase:
        """The canonical view of ``image``, its voxels checked to be a CT (:func:`check_hounsfield`)."""
        canonical = to_canonical(image)
        hu = sitk.GetArrayViewFromImage(canonical).astype(np.float32)
        check_hounsfield(hu, label)
        return cls(image, canonical, hu)

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """Voxel spacing (mm) in the order of ``hu``'s axes."""
        return self.canonical.GetSpacing()[::-1]

    @property
    def slice_mm_assumed(self) -> float | None:
        """The thickness :func:`as_volume` gave a 2D file's slice; None where the file said it."""
        return ONE_SLICE_MM if self.image.GetDimension() == 2 else None

    @property
    def gantry_tilt_deg(self) -> float | None:
        """The tilt of a DICOM series resampled onto an orthogonal grid (:mod:`model.gantry_tilt`); else None."""
        return float(self.image.GetMetaData(TILT_METADATA)) if self.image.HasMetaDataKey(TILT_METADATA) else None

    @property
    def slice_spacings_mm(self) -> list[float] | None:
        """The spacings of a DICOM series reconstructed at several, put on one grid
        (:mod:`model.slice_spacing`); else None."""
        if not self.image.HasMetaDataKey(RESTACK_METADATA):
            return None
        return [float(v) for v in self.image.GetMetaData(RESTACK_METADATA).split(",")]

    def mask_image(self, mask: np.ndarray) -> sitk.Image:
        """A uint8 0/1 mask on ``hu``'s grid as an image in the input's storage order and geometry."""
        return mask_image(mask, self.canonical, self.image)


def as_volume(image: sitk.Image) -> sitk.Image:
    """A 2D image as a volume of one axial slice :data:`ONE_SLICE_MM` thick; a 3D image as it is."""
    if image.GetDimension() != 2:
        return image
    volume = sitk.JoinSeries(image)  # the 2D direction in the upper left, the new axis along +z
    volume.SetSpacing((*image.GetSpacing(), ONE_SLICE_MM))
    return volume


def to_canonical(image: sitk.Image) -> sitk.Image:
    """Permute and flip the axes (no resampling) so the array reads as axial slices in LPS order."""
    return sitk.DICOMOrient(as_volume(image), CANONICAL)


def from_canonical(canonical: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """Undo :func:`to_canonical` and stamp the reference's exact geometry (2D for a 2D reference) on the result."""
    volume = as_volume(reference)
    original = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(volume.GetDirection())
    restored = sitk.DICOMOrient(canonical, original)
    if restored.GetSize() != volume.GetSize():
        raise ValueError(f"orientation round trip changed size {volume.GetSize()} → {restored.GetSize()}")
    if reference.GetDimension() == 2:
        restored = sitk.Extract(restored, (*reference.GetSize(), 0), (0, 0, 0))
    restored.CopyInformation(reference)
    return restored


def mask_image(mask: np.ndarray, canonical: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """A uint8 0/1 mask (canonical array order) as an image with the reference's geometry."""
    image = sitk.GetImageFromArray(mask.astype(np.uint8, copy=False))
    image.CopyInformation(canonical)
    return from_canonical(image, reference)


def write_image_atomic(image: sitk.Image, path: Path) -> None:
    """Write to a temporary name beside the target, then rename, so no half-written file is ever seen."""
    suffix = next((s for s in (*IMAGE_SUFFIXES, *GC_SUFFIXES) if path.name.lower().endswith(s)), path.suffix)
    with atomic_path(path, suffix) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)


