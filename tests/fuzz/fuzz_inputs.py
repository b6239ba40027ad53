"""Fuzz target for the image-reading and input-discovery code (atheris / libFuzzer).

The first byte picks what the rest is: an image file with one of the accepted extensions, read and
checked the way process.py does it, or an ``inputs.json`` for grand-challenge discovery. The only
acceptable failure is ``CaseError`` (a one-line refusal); anything else is a finding.

    PYTHONPATH=. python tests/fuzz/fuzz_inputs.py -runs=2000 CORPUS_COPY tests/fuzz/seeds

(libFuzzer adds new inputs to the first folder: give it a scratch copy, not the seeds.)
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

import atheris
import SimpleITK as sitk

with atheris.instrument_imports(include=["model"]):
    from model.io import Case, CaseError, discover_cases, load_case

SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")
WORK = Path(tempfile.mkdtemp(prefix="fuzz-"))


def read_one(data: bytes, suffix: str) -> None:
    path = WORK / f"case{suffix}"
    path.write_bytes(data)
    with contextlib.suppress(CaseError):
        load_case(Case("case", path, WORK / "out" / path.name))


def discover(data: bytes) -> None:
    root = WORK / "gc"
    (root / "images" / "ct").mkdir(parents=True, exist_ok=True)
    (root / "images" / "ct" / "a.mha").write_bytes(b"")
    (root / "inputs.json").write_bytes(data)
    try:
        for case in discover_cases(root, WORK / "out"):
            assert case.problem or case.input_path.resolve().is_relative_to(root.resolve()), case
    except CaseError:
        pass


def test_one_input(data: bytes) -> None:
    if not data:
        return
    choice, body = data[0] % (len(SUFFIXES) + 1), data[1:]
    if choice == len(SUFFIXES):
        discover(body)
    else:
        read_one(body, SUFFIXES[choice])


if __name__ == "__main__":
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
