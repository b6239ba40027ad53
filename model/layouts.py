"""The platforms' folder layouts: which CTs an input folder holds and where each one's mask goes.

- INSTANCE (flat): ``input/<name>.nii.gz`` → ``output/<name>.nii.gz``; DICOM series anywhere under
  ``input`` → ``output/<series name>.nii.gz`` (:mod:`model.dicom_input`).
- grand-challenge: ``input/<relative_path>/<uuid>.mha`` (the image sockets of ``inputs.json``, or every
  folder under ``images/`` without it) → ``output/images/<output_slug>/<uuid>.mha``.

Reading the images themselves is :mod:`model.io`'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from model.io import GC_SUFFIXES, IMAGE_SUFFIXES, CaseError, LoadedCase, case_name, read_image

DEFAULT_OUTPUT_SLUG = "intracranial-hemorrhage-segmentation"


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


def _has_suffix(path: Path, suffixes: tuple[str, ...]) -> bool:
    return path.is_file() and path.name.lower().endswith(suffixes) and not path.name.startswith(".")


def load_case(case: Case) -> LoadedCase:
    """Read and check a CT: a file, or the DICOM series of ``case.series``."""
    if case.problem:
        raise CaseError(case.problem)
    if case.series:
        from model.dicom_input import read_series, series_label  # imports this module: loaded on use

        label = series_label(case)
        image = read_series(case, label)
    else:
        label, image = case.input_path, read_image(case.input_path)
    return LoadedCase.of(image, label)


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
                 for p in sorted(input_dir.iterdir()) if _has_suffix(p, IMAGE_SUFFIXES)]
        cases += find_series(input_dir, output_dir, IMAGE_SUFFIXES, {c.name for c in cases})
    return _refuse_collisions([
        case if case.problem or _inside(input_dir, case.input_path)
        else Case(case.name, case.input_path, case.output_path,
                  f"{case.input_path.name}: links to a file outside the input folder; refused")
        for case in cases])
