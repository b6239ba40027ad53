"""Reading and writing images, finding the cases in an input folder, and the canonical orientation.

The network always sees axial slices in one orientation (LPS: array axes z inferior→superior,
y anterior→posterior, x right→left), whatever order the file stored its axes in; the mask is
turned back to the file's own storage order and given the file's exact geometry.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

CANONICAL = "LPS"
FLAT_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")
GC_SUFFIXES = (".mha", ".tif", ".tiff")
DEFAULT_OUTPUT_SLUG = "intracranial-hemorrhage-segmentation"


class CaseError(Exception):
    """A problem with one case, carrying the one-line message shown to the user."""


@dataclass(frozen=True)
class Case:
    """One CT to segment and where its mask goes."""

    name: str
    input_path: Path
    output_path: Path


def case_name(path: Path) -> str:
    """The file name without its image extension (``001.nii.gz`` → ``001``)."""
    name = path.name
    for suffix in (*FLAT_SUFFIXES, *GC_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _has_suffix(path: Path, suffixes: tuple[str, ...]) -> bool:
    return path.is_file() and path.name.lower().endswith(suffixes) and not path.name.startswith(".")


def read_image(path: Path) -> sitk.Image:
    """Read a 3D single-channel image, or raise CaseError saying in one line why not."""
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        detail = next((line.strip() for line in str(err).splitlines() if "rror" in line), "unreadable")
        raise CaseError(f"{path.name}: not a readable image ({detail[:160]})") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError(f"{path.name}: has {image.GetNumberOfComponentsPerPixel()} components per voxel, "
                        "expected a single-channel CT")
    if image.GetDimension() != 3:
        raise CaseError(f"{path.name}: is {image.GetDimension()}D, expected a 3D CT volume")
    return image


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
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = next((s for s in (*FLAT_SUFFIXES, *GC_SUFFIXES) if path.name.lower().endswith(s)), path.suffix)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial{suffix}")
    try:
        sitk.WriteImage(image, str(tmp), useCompression=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _inside(root: Path, candidate: Path) -> bool:
    return candidate.resolve().is_relative_to(root.resolve())


def _gc_image_folders(input_dir: Path) -> list[Path]:
    """Image socket folders from ``inputs.json``, or the folders under ``images/`` when it is absent."""
    spec = input_dir / "inputs.json"
    if not spec.is_file():
        images = input_dir / "images"
        return sorted(p for p in images.iterdir() if p.is_dir()) if images.is_dir() else []
    try:
        entries = json.loads(spec.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CaseError(f"inputs.json: not valid JSON ({err})") from None
    if not isinstance(entries, list):
        raise CaseError("inputs.json: expected a list of inputs")
    folders = []
    for entry in entries:
        interface = entry.get("interface", {}) if isinstance(entry, dict) else {}
        kind = str(interface.get("super_kind", interface.get("kind", ""))).lower()
        relative = interface.get("relative_path")
        if kind != "image" or not isinstance(relative, str):
            continue
        folder = input_dir / relative
        if not _inside(input_dir, folder):
            raise CaseError(f"inputs.json: relative_path {relative!r} leaves the input folder")
        folders.append(folder)
    return folders


def discover_cases(input_dir: Path, output_dir: Path, output_slug: str = DEFAULT_OUTPUT_SLUG) -> list[Case]:
    """Every CT under ``input_dir`` and its mask path, for the flat and the grand-challenge layout.

    Flat (INSTANCE): ``input/<name>.nii.gz`` → ``output/<name>.nii.gz``.
    Grand-challenge: ``input/<relative_path>/<uuid>.mha`` → ``output/images/<output_slug>/<uuid>.mha``.
    """
    if (input_dir / "inputs.json").is_file() or (input_dir / "images").is_dir():
        cases = []
        for folder in _gc_image_folders(input_dir):
            for path in sorted(folder.iterdir()) if folder.is_dir() else []:
                if _has_suffix(path, GC_SUFFIXES) and _inside(input_dir, path):
                    name = case_name(path)
                    cases.append(Case(name, path, output_dir / "images" / output_slug / f"{name}.mha"))
        return cases
    return [Case(case_name(p), p, output_dir / p.name)
            for p in sorted(input_dir.iterdir()) if _has_suffix(p, FLAT_SUFFIXES)]
