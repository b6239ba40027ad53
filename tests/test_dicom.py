"""DICOM series in, NIfTI mask and DICOM SEG out; every refusal one line, the other series still run."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from PIL import Image

import process
from model.dicom_input import read_series, series_label, sorted_headers
from model.dicom_seg import build_segmentation
from model.io import CaseError
from model.layouts import discover_cases, load_case
from model.predictor import EnsemblePredictor, Prediction
from model.weights import load_manifest
from tests.conftest import tiny_weights
from tests.dicom_series import BLEED, dicom_head, write_series

HU = dicom_head()
EXPECTED = np.zeros(HU.shape, np.uint8)
EXPECTED[BLEED] = 1

# folder → (status, words expected in the message)
SERIES = {
    "good": ("ok", ""),
    "missing": ("error", "uneven slice spacing"),
    "scout": ("error", "localizer"),
    "mr": ("error", "modality MR, not CT"),
    "mixed orientation": ("error", "mixed orientations"),
    "jpeg": ("error", "cannot be decoded"),
    "single": ("ok", ""),
    "single without thickness": ("error", "one slice without a SliceThickness"),
    "no frame of reference": ("ok", ""),
    "tilted": ("ok", ""),
    "uneven tilt": ("error", "off one steady tilt"),
    "thin then thick": ("ok", ""),
    "thin then thick, tilted": ("ok", ""),
}
# "thin then thick", a sequential protocol: four 2.5 mm slices, a 3.75 mm join, three 5 mm slices. The
# 5 mm grid laid on the thick slices averages the thin ones in pairs; ACQUIRED picks each slice's HU slice.
HEIGHTS = (0.0, 2.5, 5.0, 7.5, 11.25, 16.25, 21.25)
ACQUIRED = [0, 1, 2, 2, 3, 4, 5]
TILT_PX = 4  # rows each slice of "tilted" is moved down the columns: 1.8 mm of 0.45 mm rows, 19.8° at 5 mm


def write_all(root: Path) -> None:
    write_series(root / "good", HU)
    write_series(root / "missing", HU, skip=(3,))
    write_series(root / "scout", HU, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), orientation=(0, 1, 0, 0, 0, -1))
    write_series(root / "mr", HU, modality="MR")
    write_series(root / "mixed orientation", HU, orientations={2: (0.995, 0.0998, 0, -0.0998, 0.995, 0)})
    write_series(root / "jpeg", HU, undecodable=True)
    write_series(root / "single", HU[2:3], origin=(-14.0, -16.0, 50.0))  # slice 2 of "good", with blood
    for folder, attribute in (("single without thickness", "SliceThickness"),
                              ("no frame of reference", "FrameOfReferenceUID")):
        for path in write_series(root / folder, HU if attribute == "FrameOfReferenceUID" else HU[2:3]):
            ds = pydicom.dcmread(path)
            delattr(ds, attribute)
            ds.save_as(path)
    write_series(root / "tilted", HU, tilt_mm=TILT_PX * 0.45)
    for folder, drift in (("thin then thick", 0.0), ("thin then thick, tilted", TILT_PX * 0.45 / 5.0)):
        for k, path in enumerate(write_series(root / folder, HU[ACQUIRED])):  # at HEIGHTS (and tilted)
            ds = pydicom.dcmread(path)
            ds.ImagePositionPatient = [-14.0, -16.0 + HEIGHTS[k] * drift, 40.0 + HEIGHTS[k]]
            ds.save_as(path)
    uneven = write_series(root / "uneven tilt", HU, tilt_mm=TILT_PX * 0.45)
    ds = pydicom.dcmread(uneven[-1])  # the last slice a few millimetres off its tilted place
    ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1] + 3.0, ds.ImagePositionPatient[2]]
    ds.save_as(uneven[-1])


def fake_prediction(_predictor, hu, *_args, **_kwargs):
    """Probability 1 exactly on the synthetic blood (60–85 HU): a known mask whatever the weights."""
    return Prediction(((hu >= 60) & (hu <= 85)).astype(np.float32), (0, 0), 1.0, None)


@pytest.fixture(scope="module")
def dicom_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom")
    write_all(root / "in")
    tiny_weights(root / "weights")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EnsemblePredictor, "predict_with_fallback", fake_prediction)
        code = process.main(["--input", str(root / "in"), "--output", str(root / "out"),
                             "--weights", str(root / "weights"), "--qc"])
    records = {Path(r["input"]).name: r for r in json.loads((root / "out" / "results.json").read_text())["cases"]}
    return root, records, code


def test_every_bad_series_is_refused_in_one_line_and_the_good_one_runs(dicom_run):
    root, records, code = dicom_run
    assert code == 1
    assert set(records) == set(SERIES)
    for folder, (status, words) in SERIES.items():
        record = records[folder]
        assert record["status"] == status, (folder, record)
        if status == "error":
            message = record["message"]
            assert words in message and f"(in {folder})" in message and "\n" not in message, message
            assert record["output"] is None
            assert not list((root / "out").glob(f"{record['case']}*")), "a refused series left a file"
    assert not list((root / "out").rglob(".*partial*"))


def test_mask_is_written_in_the_series_geometry(dicom_run):
    root, records, _ = dicom_run
    record = records["good"]
    assert record["output"] == str(root / "out" / f"{record['case']}.nii.gz")
    mask = sitk.ReadImage(record["output"])
    assert mask.GetPixelID() == sitk.sitkUInt8 and mask.GetSize() == (64, 64, 6)
    np.testing.assert_allclose(mask.GetSpacing(), (0.5, 0.45, 5.0), atol=1e-5)
    np.testing.assert_allclose(mask.GetOrigin(), (-14.0, -16.0, 40.0), atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), EXPECTED)
    assert record["voxels"] == int(EXPECTED.sum())


def test_seg_frames_reference_the_right_slices_and_equal_the_mask(dicom_run):
    root, records, _ = dicom_run
    record = records["good"]
    seg_file = Path(record["dicom_seg"])
    assert seg_file == root / "out" / f"{record['case']}.seg.dcm"
    seg = hd.seg.segread(seg_file)
    # The generator names files in reverse slice order: ordering by name would fail here.
    sources = sorted((pydicom.dcmread(p, stop_before_pixels=True) for p in (root / "in" / "good").iterdir()),
                     key=lambda ds: int(ds.InstanceNumber))
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    segment = seg.SegmentSequence[0]
    assert segment.SegmentAlgorithmType == "AUTOMATIC" and segment.SegmentLabel == "haemorrhage"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "50960005"
    assert segment.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "ich-segmentation"
    referenced = {frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
                  for frame in seg.PerFrameFunctionalGroupsSequence}
    assert referenced == {sources[z].SOPInstanceUID for z in range(*BLEED[0].indices(6))}  # empty frames left out
    np.testing.assert_array_equal(_seg_pixels(root / "in" / "good", seg),
                                  sitk.GetArrayFromImage(sitk.ReadImage(record["output"])))


def test_a_lone_slice_gets_a_one_slice_mask_and_seg_in_its_own_geometry(dicom_run):
    """A key image or a slice dataset's file: one slice, as thick as its SliceThickness says."""
    root, records, _ = dicom_run
    record = records["single"]
    mask = sitk.ReadImage(record["output"])
    assert mask.GetSize() == (64, 64, 1)
    np.testing.assert_allclose(mask.GetSpacing(), (0.5, 0.45, 5.0), atol=1e-5)
    np.testing.assert_allclose(mask.GetOrigin(), (-14.0, -16.0, 50.0), atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), EXPECTED[2:3])
    assert record["volume_ml"] == pytest.approx(EXPECTED[2].sum() * 0.5 * 0.45 * 5.0 / 1000, rel=1e-4)
    seg = hd.seg.segread(Path(record["dicom_seg"]))
    source = pydicom.dcmread(next((root / "in" / "single").iterdir()), stop_before_pixels=True)
    pixels = seg.get_pixels_by_source_instance([source.SOPInstanceUID], segment_numbers=[1])[..., 0]
    np.testing.assert_array_equal(pixels, EXPECTED[2:3])


def test_a_series_that_cannot_have_a_seg_still_gets_its_mask_and_the_reason(dicom_run):
    """Old anonymised exports lack the frame of reference a SEG must copy: the mask is still the answer."""
    root, records, _ = dicom_run
    record = records["no frame of reference"]
    assert record["dicom_seg"] is None and "Frame Of Reference" in record["dicom_seg_skipped"]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(record["output"])), EXPECTED)
    assert not list((root / "out").glob(f"{record['case']}.seg*"))
    assert "dicom_seg_skipped" not in records["good"]


def test_a_tilted_gantry_is_segmented_on_an_orthogonal_grid_and_its_seg_on_the_acquired_slices(dicom_run):
    """Each acquired slice's blood lands where it lies in the patient; the SEG gives it back slice by slice."""
    root, records, _ = dicom_run
    record = records["tilted"]
    assert record["gantry_tilt_deg"] == pytest.approx(np.degrees(np.arctan(TILT_PX * 0.45 / 5.0)), abs=0.01)
    assert records["good"]["gantry_tilt_deg"] is None
    mask = sitk.ReadImage(record["output"])
    assert mask.GetSize() == (64, 64 + 5 * TILT_PX, 6)  # widened so that no slice loses a row
    array = sitk.GetArrayFromImage(mask)
    assert array.sum() == EXPECTED.sum() == record["voxels"]
    sources = sorted((pydicom.dcmread(p) for p in (root / "in" / "tilted").iterdir()),
                     key=lambda ds: int(ds.InstanceNumber))
    for k, ds in enumerate(sources):  # every blood pixel of every acquired slice, through patient space
        corner = np.array(ds.ImagePositionPatient, float)
        for y, x in np.argwhere(EXPECTED[k]):
            point = corner + np.array([x * 0.5, y * 0.45, 0.0])
            assert array[mask.TransformPhysicalPointToIndex(tuple(point))[::-1]] == 1
    np.testing.assert_array_equal(_seg_pixels(root / "in" / "tilted", hd.seg.segread(Path(record["dicom_seg"]))),
                                  EXPECTED)


def test_slices_at_two_spacings_go_on_the_coarsest_grid_and_the_seg_on_the_acquired_slices(dicom_run):
    root, records, _ = dicom_run
    record = records["thin then thick"]
    assert record["slice_spacings_mm"] == [2.5, 5.0] and records["good"]["slice_spacings_mm"] is None
    mask = sitk.ReadImage(record["output"])
    assert mask.GetSize()[2] == 5 and mask.GetSpacing()[2] == pytest.approx(5.0)  # planes at 1.25 ... 21.25 mm
    assert mask.GetOrigin()[2] == pytest.approx(40.0 + 1.25)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), EXPECTED[1:])  # the thin pairs are HU slices 0/1, 2
    seg = hd.seg.segread(Path(record["dicom_seg"]))
    np.testing.assert_array_equal(_seg_pixels(root / "in" / "thin then thick", seg), EXPECTED[ACQUIRED])
    tilted = records["thin then thick, tilted"]
    assert tilted["slice_spacings_mm"] == [2.5, 5.0] and tilted["gantry_tilt_deg"] > 19
    pixels = _seg_pixels(root / "in" / "thin then thick, tilted", hd.seg.segread(Path(tilted["dicom_seg"])))
    assert 2 * (pixels & EXPECTED[ACQUIRED]).sum() / (pixels.sum() + EXPECTED[ACQUIRED].sum()) > 0.8


def _seg_pixels(folder: Path, seg: hd.seg.Segmentation) -> np.ndarray:
    """The SEG's mask on the series' slices, in their order."""
    sources = sorted((pydicom.dcmread(p, stop_before_pixels=True) for p in folder.iterdir()),
                     key=lambda ds: int(ds.InstanceNumber))
    return seg.get_pixels_by_source_instance([ds.SOPInstanceUID for ds in sources], segment_numbers=[1],
                                             assert_missing_frames_are_empty=True)[..., 0]


def test_a_scanners_tilted_series_reads_every_pixel_where_it_lies(tmp_path):
    """As a scanner writes it: the image plane turned 18.5° about the patient's left-right axis, the
    slices 5 mm apart along the table (z). Each acquired pixel inside the blood reads 72 HU at its
    patient position in the orthogonal image."""
    tilt = np.radians(18.5)
    files = write_series(tmp_path / "s", HU, orientation=(1, 0, 0, 0, np.cos(tilt), np.sin(tilt)),
                         spacing=(5.0 * np.cos(tilt), 0.45, 0.5), tilt_mm=5.0 * np.sin(tilt))
    (case,) = discover_cases(tmp_path, tmp_path / "out")
    image = read_series(case, series_label(case))
    assert float(image.GetMetaData("gantry_tilt_deg")) == pytest.approx(18.5, abs=0.01)
    array = sitk.GetArrayFromImage(image)
    inner = np.zeros(HU.shape, bool)
    inner[BLEED[0], BLEED[1].start + 1: BLEED[1].stop - 1, BLEED[2].start + 1: BLEED[2].stop - 1] = True
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        k = int(ds.InstanceNumber) - 1
        corner, row, column = (np.array(ds.ImagePositionPatient, float), np.array(ds.ImageOrientationPatient[:3]),
                               np.array(ds.ImageOrientationPatient[3:]))
        assert np.allclose(corner - np.array([-14.0, -16.0, 40.0]), [0, 0, 5.0 * k], atol=1e-3)  # along the table
        for y, x in np.argwhere(inner[k]):
            index = image.TransformPhysicalPointToContinuousIndex(tuple(corner + x * 0.5 * row + y * 0.45 * column))
            assert abs(index[2] - k) < 1e-3
            assert array[k, round(index[1]), round(index[0])] == pytest.approx(72.0, abs=0.5)


def test_a_tilt_whose_orthogonal_grid_is_too_large_is_refused_in_one_line(tmp_path, monkeypatch):
    write_series(tmp_path / "s", HU, tilt_mm=TILT_PX * 0.45)
    (case,) = discover_cases(tmp_path, tmp_path / "out")
    monkeypatch.setattr("model.dicom_input.MAX_VOXELS", HU.size + 100)  # the acquired slices fit, the grid not
    with pytest.raises(CaseError, match="on one regular, orthogonal grid this series is 6 × 84 × 64"):
        load_case(case)


def test_qc_picture_is_written_for_the_good_series(dicom_run):
    _, records, _ = dicom_run
    with Image.open(records["good"]["qc"]) as picture:
        assert picture.format == "PNG"


def test_series_are_told_apart_by_uid_and_named_uniquely(tmp_path):
    inp = tmp_path / "in"
    write_series(inp / "both", HU, description="Head 5mm", number=3, prefix="A")
    write_series(inp / "both", HU, description="Head 5mm", number=3, prefix="B")
    write_series(inp / "patient" / "study" / "series", HU, description="Bone / 1.0", number=4)
    names = [c.name for c in discover_cases(inp, tmp_path / "out")]
    assert len(names) == len(set(names)) == 3
    assert sum(n.startswith("Head_5mm_3_") for n in names) == 2 and any(n.startswith("Bone_1.0_4_") for n in names)
    taken = next(n for n in names if n.startswith("Bone"))  # a NIfTI file already holding that name
    sitk.WriteImage(sitk.Image(2, 2, 2, sitk.sitkInt16), str(inp / f"{taken}.nii.gz"))
    names = [c.name for c in discover_cases(inp, tmp_path / "out")]
    assert taken in names and f"{taken}_2" in names


@pytest.mark.parametrize("orientation", [(1, 0, 0, 0, 1, 0), (1, 0, 0, 0, -1, 0), (0, 1, 0, 0, 0, -1)])
def test_slices_are_sorted_by_position_and_rescaled(tmp_path, orientation):
    files = write_series(tmp_path / "s", HU, orientation=orientation)
    (case,) = discover_cases(tmp_path, tmp_path / "out")
    image = read_series(case, series_label(case))
    array = sitk.GetArrayFromImage(image)
    assert array.dtype == np.float32
    slice_of_file = []
    for k, path in enumerate(files):  # file k holds slice k of HU
        position = [float(v) for v in pydicom.dcmread(path, stop_before_pixels=True).ImagePositionPatient]
        index = image.TransformPhysicalPointToIndex(position)
        assert index[:2] == (0, 0)
        np.testing.assert_array_equal(array[index[2]], HU[k])
        slice_of_file.append(index[2])
    headers, _ = sorted_headers(case, "s")
    for k, path in enumerate(files):
        assert headers[slice_of_file[k]].SOPInstanceUID == pydicom.dcmread(path).SOPInstanceUID
    load_case(case)  # canonical orientation and the HU check accept it


def test_jpeg_lossless_is_read_through_gdcm(tmp_path):
    """pydicom has no JPEG-lossless decoder here; GDCM reads it and applies the rescale itself."""
    files = write_series(tmp_path / "s", HU)
    for path in files:
        image = sitk.ReadImage(str(path))
        writer = sitk.ImageFileWriter()
        writer.SetImageIO("GDCMImageIO")
        writer.SetFileName(str(path.with_suffix(".jpeg")))
        writer.SetUseCompression(True)
        writer.SetCompressor("JPEG")
        writer.Execute(sitk.Cast(image, sitk.sitkInt16))
        compressed = pydicom.dcmread(path.with_suffix(".jpeg"))
        original = pydicom.dcmread(path)
        original.file_meta.TransferSyntaxUID = compressed.file_meta.TransferSyntaxUID
        original.PixelData = compressed.PixelData
        original.RescaleSlope, original.RescaleIntercept = 1, 0
        original.save_as(path)
        path.with_suffix(".jpeg").unlink()
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID.name.startswith("JPEG Lossless")
    (case,) = discover_cases(tmp_path, tmp_path / "out")
    array = sitk.GetArrayFromImage(read_series(case, "s"))
    np.testing.assert_array_equal(array, HU.astype(np.float32))


def test_unreadable_dicom_file_is_its_own_refused_case_and_dicomdir_is_skipped(tmp_path):
    write_series(tmp_path / "s", HU)
    broken = tmp_path / "s" / "broken.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00garbage")
    index = pydicom.Dataset()
    index.file_meta = pydicom.dataset.FileMetaDataset()
    index.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    index.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    index.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    index.save_as(tmp_path / "DICOMDIR", enforce_file_format=True)  # skipped, not refused
    cases = discover_cases(tmp_path, tmp_path / "out")
    refused = [c for c in cases if c.problem]
    assert len(cases) == 2 and len(refused) == 1 and "broken.dcm" in refused[0].problem
    with pytest.raises(CaseError):
        load_case(refused[0])


def test_an_empty_mask_still_makes_a_valid_seg(tmp_path):
    write_series(tmp_path / "s", HU)
    (case,) = discover_cases(tmp_path, tmp_path / "out")
    tiny_weights(tmp_path / "w")
    sources, _ = sorted_headers(case, "s")
    seg = build_segmentation(np.zeros(HU.shape, np.uint8), sources, load_manifest(tmp_path / "w"))
    assert int(seg.NumberOfFrames) == HU.shape[0]
