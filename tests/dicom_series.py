"""Tiny synthetic CT DICOM series for the tests, written with pydicom (no real data needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, JPEGLossless, generate_uid

SLOPE, INTERCEPT = 0.5, -1024.0  # stored = (HU + 1024) × 2: the reader must apply both


def write_series(folder: Path, hu: np.ndarray, *, description: str = "Head 5mm", number: int = 3,
                 spacing: tuple[float, float, float] = (5.0, 0.45, 0.5),
                 origin: Sequence[float] = (-14.0, -16.0, 40.0),
                 orientation: Sequence[float] = (1, 0, 0, 0, 1, 0), modality: str = "CT",
                 image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"), tilt_mm: float = 0.0,
                 skip: Sequence[int] = (), orientations: dict[int, Sequence[float]] | None = None,
                 undecodable: bool = False, series_uid: str | None = None, study_uid: str = "1.2.3.4.5",
                 prefix: str = "IM") -> list[Path]:
    """Write ``hu`` (slices, rows, columns; int HU) as one series; return the files (by slice).

    Files are named in reverse slice order so that only the positions can order them. ``tilt_mm``
    shifts each slice's origin along the columns (a tilted gantry), ``skip`` leaves slices out,
    ``orientations`` overrides some slices' ImageOrientationPatient, ``undecodable`` stores the
    pixels as JPEG lossless fragments that no decoder can read.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid()
    row, column = np.array(orientation[:3], float), np.array(orientation[3:], float)
    normal = np.cross(row, column)
    files = []
    for index in range(hu.shape[0]):
        if index in skip:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = JPEGLossless if undecodable else ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Phantom", "P001", "19700101", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240101", "120000", "1", "A1"
        ds.ReferringPhysicianName, ds.Manufacturer = "", "pydicom"
        ds.Modality, ds.SeriesNumber, ds.SeriesDescription = modality, number, description
        ds.InstanceNumber = index + 1
        ds.ImageType = list(image_type)
        ds.ImageOrientationPatient = list((orientations or {}).get(index, orientation))
        position = np.asarray(origin, float) + index * spacing[0] * normal + index * tilt_mm * column
        ds.ImagePositionPatient = [round(float(v), 4) for v in position]
        ds.SliceThickness, ds.PixelSpacing = spacing[0], [spacing[1], spacing[2]]
        ds.Rows, ds.Columns = hu.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = SLOPE, INTERCEPT, "HU"
        stored = np.round((hu[index].astype(np.float64) - INTERCEPT) / SLOPE).astype(np.int16)
        ds.PixelData = encapsulate([b"\xff\xd8 not a JPEG stream \xff\xd9"]) if undecodable else stored.tobytes()
        path = folder / f"{prefix}{hu.shape[0] - index:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


BLEED = (slice(2, 5), slice(20, 32), slice(12, 28))  # slices, rows, columns: off-centre in all three


def dicom_head(shape: tuple[int, int, int] = (6, 64, 64)) -> np.ndarray:
    """int16 HU without noise: air, skull ring, brain, and a 72 HU box of blood at :data:`BLEED`."""
    _, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    r = ((y - shape[1] / 2) / (shape[1] * 0.45)) ** 2 + ((x - shape[2] / 2) / (shape[2] * 0.45)) ** 2
    hu = np.full(shape, -1000, np.int16)
    hu[np.broadcast_to(r < 1.0, shape)] = 1200
    hu[np.broadcast_to(r < 0.8, shape)] = 32
    hu[BLEED] = 72
    return hu
