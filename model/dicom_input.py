"""DICOM CT series as cases: found anywhere under the input folder, checked, sorted by position and
read into one 3D image in Hounsfield units.

Hospitals export series, not volumes. A folder may hold one series, several series mixed together
or a tree of them (patient/study/series); the series are told apart by SeriesInstanceUID, never by
folder or file name. Slices are ordered by their position along the slice normal (file names carry
no order), and the series is refused, with one line naming it and the problem, whenever a regular
3D grid would misplace the mask: missing slices, mixed orientations, a localizer, a non-CT modality,
or pixel data no installed decoder can read. A tilted gantry's series is put on an orthogonal grid
(:mod:`model.gantry_tilt`), and one reconstructed at several slice spacings on a regular one
(:mod:`model.slice_spacing`).

Pixel data are decoded by pydicom (uncompressed, RLE, JPEG baseline/extended, JPEG 2000 through
Pillow, JPEG-LS through pyjpegls); syntaxes pydicom has no decoder for here (notably JPEG lossless,
common in PACS exports) are read by SimpleITK's GDCM, which applies the rescale itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import warnings
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder

from model.gantry_tilt import TILT_METADATA, Tilt, fit_tilt
from model.io import MAX_VOXELS, CaseError
from model.layouts import Case
from model.slice_spacing import RESTACK_METADATA, Restack, fit_restack

# pydicom checks every value it reads lazily against its VR and warns on each bad one (a damaged file
# prints dozens of lines). A series is judged here by the checks below, each refusing in one line.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom(\.|$)")

MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"  # the SOP class of a DICOMDIR
DICOM_MARKER = b"DICM"  # DICOM Part 10: the 4 bytes after the 128-byte preamble
ORIENTATION_TOLERANCE = 1e-4  # direction cosines written with 6+ decimals agree to this
POSITION_TOLERANCE_MM = 0.02  # slices may sit this far, or 2 % of the spacing, off the regular grid
SHEAR_TOLERANCE_PIXELS = 0.5  # in-plane drift of the slice origins above this is a tilted gantry


@dataclass(frozen=True)
class SeriesGeometry:
    """How sorted slices make one regular grid: order of the files, first slice's origin, axes, spacing,
    the gantry's tilt (None for an orthogonal stack) and the restacking of several slice spacings
    (None for one)."""

    order: tuple[int, ...]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]  # SimpleITK's row-major 3 × 3, columns = row, column, normal
    spacing: tuple[float, float, float]  # x (along a row), y (down a column), z (between slice planes)
    tilt: Tilt | None = None
    restack: Restack | None = None


def is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file (preamble + ``DICM``); files without the marker are not looked at."""
    try:
        with path.open("rb") as stream:
            head = stream.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == DICOM_MARKER


def _dcmread(path: Path, pixels: bool) -> Dataset:
    """pydicom's reader without its warnings: a damaged file is refused in one line, not announced in five."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, stop_before_pixels=not pixels)


def _dicom_files(input_dir: Path, skip_suffixes: tuple[str, ...]) -> list[Path]:
    """Every DICOM file under ``input_dir`` (hidden entries and links to folders left out)."""
    found = []
    for folder, subfolders, files in os.walk(input_dir):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in sorted(files):
            path = Path(folder) / name
            if not name.startswith(".") and not name.lower().endswith(skip_suffixes) and is_dicom_file(path):
                found.append(path)
    return found


def _sanitise(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("._-")[:60]


def series_name(header: Dataset, uid: str) -> str:
    """``<SeriesDescription>_<SeriesNumber>_<8 hex of the UID's SHA-1>``, file-name safe.

    The hash keeps two series of the same description apart and is stable between runs.
    """
    parts = [_sanitise(str(header.get("SeriesDescription", "") or "")),
             _sanitise(str(header.get("SeriesNumber", "") or "")), hashlib.sha1(uid.encode()).hexdigest()[:8]]
    return "_".join(p for p in parts if p)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root)) or "."
    except ValueError:
        return str(path)


def find_series(input_dir: Path, output_dir: Path, skip_suffixes: tuple[str, ...],
                taken: set[str]) -> list[Case]:
    """One case per SeriesInstanceUID under ``input_dir``, its mask at ``<output>/<name>.nii.gz``.

    ``taken`` holds names already used by image files; series names are made unique against them
    and each other. Files whose header cannot be read, or that link out of the input folder, become
    refused cases of their own.
    """
    groups: dict[str, list[Path]] = defaultdict(list)
    names: dict[str, str] = {}
    cases: list[Case] = []
    root = input_dir.resolve()
    for path in _dicom_files(input_dir, skip_suffixes):
        rel = _relative(path, input_dir)
        if not path.resolve().is_relative_to(root):
            cases.append(Case(path.name, path, Path(), f"{rel}: links to a file outside the input folder; refused"))
            continue
        try:  # pydicom raises many types on damaged files: any of them refuses the file
            header = _dcmread(path, pixels=False)
            if header.file_meta.get("MediaStorageSOPClassUID") == MEDIA_DIRECTORY:
                continue  # a DICOMDIR (CD/DVD exports) indexes the files; the files themselves are read
            uid = str(header.SeriesInstanceUID)
            names.setdefault(uid, series_name(header, uid))
        except Exception as err:
            reason = " ".join(str(err).split())[:120] or type(err).__name__
            cases.append(Case(path.name, path, Path(), f"{rel}: not a readable DICOM CT slice ({reason})"))
            continue
        groups[uid].append(path)
    used = set(taken)
    for uid in sorted(groups, key=lambda u: (names[u], u)):
        base = name = names[uid]
        count = 1
        while name in used:
            count += 1
            name = f"{base}_{count}"
        used.add(name)
        files = tuple(sorted(groups[uid]))
        folder = Path(os.path.commonpath([str(p.parent) for p in files]))
        cases.append(Case(name, folder, output_dir / f"{name}.nii.gz", series=files))
    return cases


def series_label(case: Case) -> str:
    """How messages name a series: its case name and the folder its files are in."""
    return f"DICOM series {case.name} (in {case.input_path.name or case.input_path})"


def _read_headers(files: tuple[Path, ...], label: str, pixels: bool) -> list[Dataset]:
    datasets = []
    for path in files:
        try:
            datasets.append(_dcmread(path, pixels))
        except Exception as err:  # pydicom raises many types on damaged files
            raise CaseError(f"{label}: {path.name} is not a readable DICOM file "
                            f"({' '.join(str(err).split())[:120]})") from None
    return datasets


def _vector(ds: Dataset, keyword: str, length: int, label: str) -> np.ndarray:
    value = ds.get(keyword)
    try:
        array = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        array = np.zeros(0)
    if array.shape != (length,) or not np.isfinite(array).all():
        raise CaseError(f"{label}: {keyword} is missing or invalid ({repr(value)[:60]}); cannot place the slices")
    return array


def _check_kind(datasets: list[Dataset], label: str) -> None:
    """What the series is: CT, axial image slices, single-frame, more than one, one size."""
    modalities = sorted({str(ds.get("Modality", "")) or "none" for ds in datasets})
    if modalities != ["CT"]:
        raise CaseError(f"{label}: modality {'/'.join(modalities)}, not CT; only CT series are segmented")
    localizers = sum("LOCALIZER" in [str(v).upper() for v in (ds.get("ImageType") or [])] for ds in datasets)
    if localizers:
        raise CaseError(f"{label}: {localizers} of {len(datasets)} image(s) are a localizer (scout), "
                        "not axial slices; refused")
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in datasets):
        raise CaseError(f"{label}: multi-frame (enhanced) CT is not supported; export it as single-frame slices")
    shapes = {(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0), int(ds.get("SamplesPerPixel", 1) or 1),
               tuple(round(float(v), 4) for v in (ds.get("PixelSpacing") or []))) for ds in datasets}
    if len(shapes) != 1:
        raise CaseError(f"{label}: slices differ in size, samples per pixel or pixel spacing "
                        f"({len(shapes)} kinds, e.g. {sorted(shapes)[:2]})")
    rows, columns, samples, spacing = shapes.pop()
    if samples != 1 or rows < 1 or columns < 1:
        raise CaseError(f"{label}: {rows} × {columns} pixels of {samples} samples; expected greyscale CT slices")
    if len(spacing) != 2 or not all(s > 0 for s in spacing):
        raise CaseError(f"{label}: PixelSpacing {list(spacing)} is missing or not positive")
    if rows * columns * len(datasets) > MAX_VOXELS:
        raise CaseError(f"{label}: {len(datasets)} slices of {rows} × {columns} is more than the {MAX_VOXELS:,} "
                        "voxels this container handles")


def series_geometry(datasets: list[Dataset], label: str) -> SeriesGeometry:
    """Sort the slices along their normal and check that they make one regular, orthogonal grid.

    Refuses mixed orientations, duplicate positions, uneven spacing (missing slices) and slice
    origins that drift in-plane irregularly. A steady drift is a tilted gantry, returned as ``tilt``;
    runs of regular slices at several spacings are returned as ``restack``. A lone slice is a volume
    of one, its SliceThickness thick.
    """
    _check_kind(datasets, label)
    orientations = np.array([_vector(ds, "ImageOrientationPatient", 6, label) for ds in datasets])
    if np.abs(orientations - orientations[0]).max() > ORIENTATION_TOLERANCE:
        count = len({tuple(np.round(o, 3)) for o in orientations})
        raise CaseError(f"{label}: mixed orientations ({count} different ImageOrientationPatient values); "
                        "refused")
    row, column = orientations[0][:3], orientations[0][3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(column) - 1) > 1e-3 or abs(row @ column) > 1e-3:
        raise CaseError(f"{label}: ImageOrientationPatient {orientations[0].tolist()} is not two orthogonal "
                        "unit vectors")
    row = row / np.linalg.norm(row)
    column = column - (column @ row) * row
    column = column / np.linalg.norm(column)
    normal = np.cross(row, column)

    positions = np.array([_vector(ds, "ImagePositionPatient", 3, label) for ds in datasets])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    positions, along = positions[order], along[order]
    pixel_spacing = [float(v) for v in datasets[0].PixelSpacing]  # (between rows, between columns)
    tilt = restack = None
    rows, columns = int(datasets[0].Rows), int(datasets[0].Columns)
    if len(datasets) == 1:
        step = _one_slice_thickness(datasets[0], label)
    else:
        step, restack = _slice_step(along, label)
        offsets = positions - positions[0]
        try:
            tilt = fit_tilt(offsets @ np.stack([row, column], axis=1), along, (pixel_spacing[1], pixel_spacing[0]),
                            SHEAR_TOLERANCE_PIXELS)
        except ValueError as err:
            raise CaseError(f"{label}: {err}; refused") from None
    planes = restack.planes if restack else len(datasets)
    grid = tilt.grid_shape(rows, columns) if tilt else (rows, columns)
    if planes * grid[0] * grid[1] > MAX_VOXELS:
        raise CaseError(f"{label}: on one regular, orthogonal grid this series is {planes} × {grid[0]} × {grid[1]}, "
                        f"more than the {MAX_VOXELS:,} voxels this container handles")
    direction = np.stack([row, column, normal], axis=1)  # columns: the image's x, y, z axes
    return SeriesGeometry(order=tuple(int(i) for i in order), origin=tuple(float(v) for v in positions[0]),
                          direction=tuple(float(v) for v in direction.ravel()),
                          spacing=(pixel_spacing[1], pixel_spacing[0], step), tilt=tilt, restack=restack)


def _one_slice_thickness(ds: Dataset, label: str) -> float:
    """A lone slice (a key image, a slice dataset) is as thick as it says: millilitres need it."""
    thickness = float(ds.get("SliceThickness") or 0)
    if not thickness > 0:
        raise CaseError(f"{label}: one slice without a SliceThickness; its thickness is needed to measure "
                        "millilitres")
    return thickness


def _slice_step(along: np.ndarray, label: str) -> tuple[float, Restack | None]:
    """The spacing of slices sorted along their normal, and how runs of several spacings are put on one
    grid (None for one regular spacing); refused unless the slices make such runs."""
    gaps = np.diff(along)
    if gaps.min() < POSITION_TOLERANCE_MM:
        raise CaseError(f"{label}: {int((gaps < POSITION_TOLERANCE_MM).sum()) + 1} slices share a position "
                        "(duplicates, or several acquisitions in one series); refused")
    try:
        restack = fit_restack(along, POSITION_TOLERANCE_MM, 0.02)
    except ValueError as err:
        raise CaseError(f"{label}: {err}; refused") from None
    return (restack.step_mm if restack else float((along[-1] - along[0]) / (len(along) - 1))), restack


@contextlib.contextmanager
def _malformed(label: str) -> Iterator[None]:
    """A header value of the wrong type or form (``Rows = "abc"``, an unknown VR) refuses the series in
    one line. pydicom converts values when they are first read, so its errors (of many types) surface
    wherever a value is used."""
    try:
        yield
    except CaseError:
        raise
    except Exception as err:
        reason = " ".join(str(err).split())[:120]
        raise CaseError(f"{label}: malformed DICOM header ({type(err).__name__}: {reason})") from None


def sorted_headers(case: Case, label: str) -> tuple[list[Dataset], SeriesGeometry]:
    """The series' headers (no pixel data) in the order of the image's slices, and its geometry."""
    datasets = _read_headers(case.series, label, pixels=False)
    with _malformed(label):
        geometry = series_geometry(datasets, label)
        return [datasets[i] for i in geometry.order], geometry


def _slice_hu(ds: Dataset, path: Path, label: str) -> np.ndarray:
    """One slice in HU: pydicom when it has a decoder for the transfer syntax, else GDCM."""
    syntax = ds.file_meta.get("TransferSyntaxUID", pydicom.uid.ImplicitVRLittleEndian)
    try:
        decodable = get_decoder(syntax).is_available
    except NotImplementedError:
        decodable = False
    if decodable:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                stored = ds.pixel_array
        except Exception as err:  # decoders raise many types on damaged data
            raise CaseError(f"{label}: {path.name}: pixel data could not be decoded ({syntax.name}: "
                            f"{' '.join(str(err).split())[:100]})") from None
        return stored.astype(np.float32) * float(ds.get("RescaleSlope", 1) or 1) + float(
            ds.get("RescaleIntercept", 0) or 0)
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")  # applies RescaleSlope/Intercept itself
    reader.SetFileName(str(path))
    try:
        return sitk.GetArrayFromImage(reader.Execute()).reshape(int(ds.Rows), int(ds.Columns)).astype(np.float32)
    except (RuntimeError, ValueError):
        raise CaseError(f"{label}: compressed transfer syntax {syntax.name} ({syntax}) cannot be decoded "
                        "here; export the series uncompressed") from None


def read_series(case: Case, label: str) -> sitk.Image:
    """Read, check and sort a series into one float32 HU image with the series' geometry.

    A tilted gantry's slices are moved onto an orthogonal grid (:class:`model.gantry_tilt.Tilt`), air
    (or the scanner's padding, if lower) where none was acquired; the image's metadata
    :data:`TILT_METADATA` then holds the angle. Slices at several spacings are then averaged onto
    the grid of the coarsest (:class:`model.slice_spacing.Restack`; metadata :data:`RESTACK_METADATA`).
    """
    datasets = _read_headers(case.series, label, pixels=True)
    with _malformed(label):
        geometry = series_geometry(datasets, label)
        volume = np.stack([_slice_hu(datasets[i], case.series[i], label) for i in geometry.order])
    origin, axes = np.asarray(geometry.origin), np.asarray(geometry.direction).reshape(3, 3)
    if geometry.tilt is not None:
        volume = geometry.tilt.to_orthogonal(volume, fill=min(float(volume.min()), -1024.0))
        x0, y0 = geometry.tilt.corner
        origin = origin + axes[:, 0] * x0 * geometry.spacing[0] + axes[:, 1] * y0 * geometry.spacing[1]
    if geometry.restack is not None:
        volume = geometry.restack.to_grid(volume)
        origin = origin + axes[:, 2] * geometry.restack.first_plane_mm
    image = sitk.GetImageFromArray(volume)
    image.SetOrigin(tuple(float(v) for v in origin))
    image.SetDirection(geometry.direction)
    image.SetSpacing(geometry.spacing)
    if geometry.tilt is not None:
        image.SetMetaData(TILT_METADATA, f"{geometry.tilt.angle_deg:.2f}")
    if geometry.restack is not None:
        image.SetMetaData(RESTACK_METADATA, ",".join(f"{s:.3f}" for s in geometry.restack.spacings_mm))
    return image
