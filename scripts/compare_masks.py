#!/usr/bin/env python3
"""The container test's checks (test.sh runs them inside the image; tests/test_samples.py on real masks).

    compare_masks.py prepare-gc CASE DIR       a grand-challenge input folder (inputs.json, one .mha) from CASE
    compare_masks.py compare EXPECTED_DIR OUTPUT_DIR
    compare_masks.py compare-gc SLUG_DIR EXPECTED_MASK INPUT_MHA

Masks must equal the expected ones voxel for voxel, with their pixel type, and carry the input's exact
geometry. Needs only NumPy and SimpleITK (both in the image); prints ``ok``/``FAIL`` per mask and exits 1
on any failure.
"""
from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def geometry(image: sitk.Image) -> tuple:
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def pixel(image: sitk.Image) -> tuple[str, int]:
    return image.GetPixelIDTypeAsString(), image.GetNumberOfComponentsPerPixel()


def differences(got: sitk.Image, want: sitk.Image, geometry_of: sitk.Image) -> list[str]:
    """Empty when ``got`` has ``want``'s voxels and pixel type and ``geometry_of``'s geometry, exactly."""
    problems = []
    if geometry(got) != geometry(geometry_of):
        problems.append(f"geometry {geometry(got)} != {geometry(geometry_of)}")
    if pixel(got) != pixel(want):
        problems.append(f"pixel type {pixel(got)} != {pixel(want)}")
    a, b = sitk.GetArrayViewFromImage(got), sitk.GetArrayViewFromImage(want)
    if a.shape != b.shape or not np.array_equal(a, b):
        problems.append(f"voxels differ ({int(np.sum(a != b)) if a.shape == b.shape else 'shape'})")
    return problems


def report(name: str, problems: list[str]) -> int:
    """Print the mask's line; 1 when it failed."""
    print(("FAIL " if problems else "ok   ") + name + (": " + "; ".join(problems) if problems else ""))
    return int(bool(problems))


def prepare_gc(case: Path, folder: Path) -> None:
    """``folder`` as grand-challenge hands it over: ``images/ct/<uuid>.mha`` and an ``inputs.json``."""
    (folder / "images" / "ct").mkdir(parents=True)
    image = sitk.ReadImage(str(case))
    for key in image.GetMetaDataKeys():  # NIfTI header fields have no place in a .mha upload
        image.EraseMetaData(key)
    sitk.WriteImage(image, str(folder / "images" / "ct" / f"{uuid.uuid4()}.mha"), True)
    interface = {"slug": "ct-image", "kind": "Image", "super_kind": "Image", "relative_path": "images/ct"}
    entry = {"interface": interface, "image": {"pk": str(uuid.uuid4()), "name": case.name}}
    (folder / "inputs.json").write_text(json.dumps([entry]))


def compare(expected: Path, output: Path) -> int:
    """Failures among the INSTANCE-layout masks: every expected one present and equal, nothing extra."""
    extra = sorted(p.name for p in output.glob("*.nii.gz") if not (expected / p.name).exists())
    failures = sum(report(name, ["written but not in the expected masks"]) for name in extra)
    for want_path in sorted(expected.glob("*.nii.gz")):
        got_path = output / want_path.name
        want = sitk.ReadImage(str(want_path))
        problems = ["missing"] if not got_path.exists() else differences(sitk.ReadImage(str(got_path)), want, want)
        failures += report(want_path.name, problems)
    return failures


def compare_gc(slug_dir: Path, want_path: Path, input_mha: Path) -> int:
    """Failures of the grand-challenge run: exactly one .mha, equal to ``want_path``, in the input's geometry."""
    files = sorted(p.name for p in slug_dir.iterdir()) if slug_dir.is_dir() else []
    if len(files) != 1 or not files[0].endswith(".mha"):
        return report(str(slug_dir), [f"expected exactly one .mha, found {files}"])
    problems = differences(sitk.ReadImage(str(slug_dir / files[0])), sitk.ReadImage(str(want_path)),
                           sitk.ReadImage(str(input_mha)))
    return report(f"{slug_dir.name}/{files[0]}", problems)


def main(argv: list[str]) -> int:
    mode, *args = argv
    if mode == "prepare-gc":
        prepare_gc(Path(args[0]), Path(args[1]))
        return 0
    if mode == "compare":
        return 1 if compare(Path(args[0]), Path(args[1])) else 0
    if mode == "compare-gc":
        return 1 if compare_gc(Path(args[0]), Path(args[1]), Path(args[2])) else 0
    print(f"unknown mode {mode!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
