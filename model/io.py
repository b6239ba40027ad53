"""Reading and writing images, finding the cases in an input folder, and the canonical orientation.

The network always sees axial slices in one orientation (LPS: array axes z inferior→superior,
y anterior→posterior, x right→left), whatever order the file stored its axes in; the mask is
turned back to the file's own storage order and given the file's exact geometry.
"""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from model.atomic import atomic_path

CANONICAL = "LPS"
FLAT_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")
GC_SUFFIXES = (".mha", ".tif", ".tiff")
DEFAULT_OUTPUT_SLUG = "intracranial-hemorrhage-segmentation"


class CaseError(Exception):
    """A problem with one case, carrying the one-line message shown to the user."""


@dataclass(frozen=True)
class Case:
    """One CT to segment and where its mask goes; ``problem`` refuses it before it is read.

    A DICOM series has its files in ``series`` and the folder holding them as ``input_path``.
    """

    name: str
    input_path: Path
    output_path: Path
    problem: str | None = None
    series: tuple[Path, ...] = ()


def case_name(path: Path) -> str:
    """The file name without its image extension (``001.nii.gz`` → ``001``)."""
    name = path.name
    for suffix in (*FLAT_SUFFIXES, *GC_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _has_suffix(path: Path, suffixes: tuple[str, ...]) -> bool:
    return path.is_file() and path.name.lower().endswith(suffixes) and not path.name.startswith(".")


MAX_VOXELS = 400_000_000  # 1024 × 1024 × 380: larger would exhaust the container's memory
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
    """Read a 3D single-channel image, or raise CaseError saying in one line why not.

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
    if reader.GetDimension() != 3 or (len(size) > 3 and any(s > 1 for s in size[3:])):
        raise CaseError(f"{path.name}: is {reader.GetDimension()}D with size {size}, expected a 3D CT volume")
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


def load_case(case: Case) -> tuple[sitk.Image, sitk.Image, np.ndarray]:
    """Read and check a CT; return it, its canonical view, and the canonical HU array (z, y, x)."""
    if case.problem:
        raise CaseError(case.problem)
    if case.series:
        from model.dicom_input import read_series, series_label  # imports this module: loaded on use

        label = series_label(case)
        image = read_series(case, label)
    else:
        label, image = case.input_path, read_image(case.input_path)
    canonical = to_canonical(image)
    hu = sitk.GetArrayViewFromImage(canonical).astype(np.float32)
    check_hounsfield(hu, label)
    return image, canonical, hu


def to_canonical(image: sitk.Image) -> sitk.Image:
    """Permute and flip the axes (no resampling) so the array reads as axial slices in LPS order."""
    return sitk.DICOMOrient(image, CANONICAL)


def from_canonical(canonical: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """Undo :func:`to_canonical` and stamp the reference's exact geometry on the result."""
    original = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(reference.GetDirection())
    restored = sitk.DICOMOrient(canonical, original)
    if restored.GetSize() != reference.GetSize():
        raise ValueError(f"orientation round trip changed size {reference.GetSize()} → {restored.GetSize()}")
    restored.CopyInformation(reference)
    return restored


def mask_image(mask: np.ndarray, canonical: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """A uint8 0/1 mask (canonical array order) as an image with the reference's geometry."""
    image = sitk.GetImageFromArray(mask.astype(np.uint8, copy=False))
    image.CopyInformation(canonical)
    return from_canonical(image, reference)


def write_image_atomic(image: sitk.Image, path: Path) -> None:
    """Write to a temporary name beside the target, then rename, so no half-written file is ever seen."""
    suffix = next((s for s in (*FLAT_SUFFIXES, *GC_SUFFIXES) if path.name.lower().endswith(s)), path.suffix)
    with atomic_path(path, suffix) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)


def _inside(root: Path, candidate: Path) -> bool:
    return candidate.resolve().is_relative_to(root.resolve())


def _gc_image_folders(input_dir: Path) -> tuple[list[Path], list[Case]]:
    """Image socket folders from ``inputs.json`` (or every folder under ``images/`` when it is absent),
    and refused entries whose path would leave the input folder."""
    spec = input_dir / "inputs.json"
    if not spec.is_file():
        images = input_dir / "images"
        return (sorted(p for p in images.iterdir() if p.is_dir()) if images.is_dir() else []), []
    try:
        entries = json.loads(spec.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CaseError(f"inputs.json: not valid JSON ({err})") from None
    if not isinstance(entries, list):
        raise CaseError("inputs.json: expected a list of inputs")
    folders, refused = [], []
    for entry in entries:
        interface = entry.get("interface", {}) if isinstance(entry, dict) else {}
        kind = str(interface.get("super_kind", interface.get("kind", ""))).lower()
        relative = interface.get("relative_path")
        if kind != "image" or not isinstance(relative, str):
            continue
        folder = input_dir / relative
        if _inside(input_dir, folder):
            folders.append(folder)
        else:
            refused.append(Case(relative, folder, Path(), f"inputs.json: relative_path {relative!r} leaves the "
                                                          "input folder; refused"))
    return folders, refused


def _refuse_collisions(cases: list[Case]) -> list[Case]:
    """A second case whose mask would land on the same path as an earlier one's is refused, not overwritten."""
    seen: dict[Path, Case] = {}
    result = []
    for case in cases:
        first = seen.setdefault(case.output_path, case) if case.problem is None else case
        if first is not case:
            case = Case(case.name, case.input_path, case.output_path,
                        f"{case.input_path.name}: its mask would overwrite that of {first.input_path.name} "
                        "(names differ only by extension); refused")
        result.append(case)
    return result


def discover_cases(input_dir: Path, output_dir: Path, output_slug: str = DEFAULT_OUTPUT_SLUG) -> list[Case]:
    """Every CT under ``input_dir`` and its mask path, for the flat and the grand-challenge layout.

    Flat (INSTANCE): ``input/<name>.nii.gz`` → ``output/<name>.nii.gz``; DICOM series anywhere under
    ``input`` → ``output/<series name>.nii.gz`` (:mod:`model.dicom_input`).
    Grand-challenge: ``input/<relative_path>/<uuid>.mha`` → ``output/images/<output_slug>/<uuid>.mha``.
    Files reached through links that leave the input folder are refused.
    """
    if (input_dir / "inputs.json").is_file() or (input_dir / "images").is_dir():
        folders, cases = _gc_image_folders(input_dir)
        for folder in folders:
            for path in sorted(folder.iterdir()) if folder.is_dir() else []:
                if _has_suffix(path, GC_SUFFIXES):
                    cases.append(Case(case_name(path), path,
                                      output_dir / "images" / output_slug / f"{case_name(path)}.mha"))
    else:
        from model.dicom_input import find_series  # imports this module: loaded on use

        cases = [Case(case_name(p), p, output_dir / p.name)
                 for p in sorted(input_dir.iterdir()) if _has_suffix(p, FLAT_SUFFIXES)]
        cases += find_series(input_dir, output_dir, FLAT_SUFFIXES, {c.name for c in cases})
    return _refuse_collisions([
        case if case.problem or _inside(input_dir, case.input_path)
        else Case(case.name, case.input_path, case.output_path,
                  f"{case.input_path.name}: links to a file outside the input folder; refused")
        for case in cases])
