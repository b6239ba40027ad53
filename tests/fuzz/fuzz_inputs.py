"""Fuzz target for the image-reading and input-discovery code (atheris / libFuzzer).

The first byte picks what the rest is: an image file with one of the accepted extensions, read and
checked the way process.py does it, an ``inputs.json`` for grand-challenge discovery, or a DICOM
file (after the preamble and ``DICM``) found and read as a series beside a valid slice of the same
series. The only acceptable failure is ``CaseError`` (a one-line refusal); anything else is a finding.

    PYTHONPATH=. python tests/fuzz/fuzz_inputs.py -runs=2000 CORPUS_COPY tests/fuzz/seeds

(libFuzzer adds new inputs to the first folder: give it a scratch copy, not the seeds.)
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
import tempfile
from pathlib import Path

import atheris
import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

with atheris.instrument_imports(include=["model"]):
    from model.io import CaseError
    from model.layouts import Case, discover_cases, load_case

SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")
WORK = Path(tempfile.mkdtemp(prefix="fuzz-"))
DICOM_MODE = len(SUFFIXES) + 1
SERIES_UID = "1.2.826.0.1.3680043.10.1.1"


def dicom_slice(z: float) -> bytes:
    """An 8 × 8 CT slice of :data:`SERIES_UID` at height ``z``, without preamble and ``DICM``.

    The seed ``tests/fuzz/seeds/dicom-slice`` is ``bytes([DICOM_MODE]) + dicom_slice(0.0)``.
    """
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = f"{SERIES_UID}.{int(z * 10) + 100}"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = "1.2.3", SERIES_UID, "1.2.3.4"
    ds.Modality, ds.SeriesNumber, ds.ImageType = "CT", 2, ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 0, 0, 0, 1, 0], [0.0, 0.0, z]
    ds.PixelSpacing, ds.Rows, ds.Columns, ds.SamplesPerPixel = [0.5, 0.5], 8, 8, 1
    ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored, ds.HighBit = "MONOCHROME2", 16, 16, 15
    ds.PixelRepresentation, ds.RescaleSlope, ds.RescaleIntercept = 1, 1, -1024
    ds.PixelData = np.arange(64, dtype=np.int16).tobytes()
    stream = io.BytesIO()
    ds.save_as(stream, enforce_file_format=True)
    return stream.getvalue()[132:]


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


def read_dicom(data: bytes) -> None:
    root = WORK / "dicom"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    (root / "a.dcm").write_bytes(b"\0" * 128 + b"DICM" + data)
    (root / "b.dcm").write_bytes(b"\0" * 128 + b"DICM" + dicom_slice(5.0))  # so the series reaches its checks
    with contextlib.suppress(CaseError):
        for case in discover_cases(root, WORK / "out"):
            with contextlib.suppress(CaseError):
                load_case(case)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    choice, body = data[0] % (DICOM_MODE + 1), data[1:]
    if choice == DICOM_MODE:
        read_dicom(body)
    elif choice == len(SUFFIXES):
        discover(body)
    else:
        read_one(body, SUFFIXES[choice])


if __name__ == "__main__":
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
