"""process.py end to end with tiny networks: layouts, geometry, orientation, results.json, exit status."""

import json
import sys

import numpy as np
import pytest
import SimpleITK as sitk

import process
from tests.conftest import ct_image, head_volume


def run(inp, out, weights, *extra):
    return process.main(["--input", str(inp), "--output", str(out), "--weights", str(weights), *extra])


@pytest.mark.parametrize(("family", "mode"), [("segresnet2d", "windows3"), ("segresnet2d", "combined9"),
                                              ("cascade3d", "windows3")])
def test_flat_folder_end_to_end(tmp_path, weights_factory, family, mode):
    weights = weights_factory(family, mode, postprocess={"never_empty": True})
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    image = ct_image(head_volume(), direction=(0, 1, 0, -1, 0, 0, 0, 0, 1))
    sitk.WriteImage(image, str(inp / "case one.nii.gz"))
    assert run(inp, out, weights) == 0
    mask = sitk.ReadImage(str(out / "case one.nii.gz"))
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert mask.GetSize() == image.GetSize()
    np.testing.assert_allclose(mask.GetDirection(), image.GetDirection())
    np.testing.assert_allclose(mask.GetOrigin(), image.GetOrigin(), atol=1e-4)
    values = set(np.unique(sitk.GetArrayFromImage(mask)).tolist())
    assert values <= {0, 1} and 1 in values  # never_empty
    results = json.loads((out / "results.json").read_text())
    record = results["cases"][0]
    assert record["status"] == "ok" and record["case"] == "case one"
    assert record["voxels"] == int(sitk.GetArrayFromImage(mask).sum())
    assert record["volume_ml"] == pytest.approx(record["voxels"] * 0.45 * 0.45 * 5 / 1000, rel=1e-3)
    assert results["totals"] == {**results["totals"], "cases": 1, "ok": 1, "errors": 0}
    assert results["compute"]["device"] == "cpu" and results["compute"]["precision"] in ("fp32", "bf16")
    assert results["compute"]["freed_memory_kept"] is (sys.platform == "linux")
    assert record["fallback"] in (True, False) and isinstance(record["review"], bool)
    assert 0.0 <= record["fold_dice"] <= 1.0 and len(record["fold_ml"]) == 2
    assert record["review"] == ("review_reason" in record)
    assert record["thin_slices_averaged_to_mm"] is None  # 5 mm slices, and no slab in these weights
    assert record["hu_shift"] == 0.0  # no trained brain range in these weights
    assert record["skull_extent_mm"] == pytest.approx(0.45 * 52, abs=1.0)  # the test head's skull: 52 pixels


def test_a_head_larger_than_any_is_flagged_for_its_pixel_spacing(tmp_path, weights_factory):
    """The test head (a skull 52 pixels across) said to have 5 mm pixels: 260 mm, a wrong spacing."""
    weights = weights_factory()
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    sitk.WriteImage(ct_image(head_volume(), spacing=(5.0, 5.0, 5.0)), str(inp / "big.nii.gz"))
    assert run(inp, out, weights) == 0  # segmented, and flagged for a person
    record = json.loads((out / "results.json").read_text())["cases"][0]
    assert record["skull_extent_mm"] == pytest.approx(260.0, abs=10.0) and record["review"]
    assert "larger than any head: the pixel spacing is likely wrong" in record["review_reason"]


@pytest.mark.parametrize("family", ["segresnet2d", "cascade3d"])
def test_a_thin_slice_series_is_predicted_on_the_trained_slab_and_answered_on_every_slice(
        tmp_path, weights_factory, family):
    inference = {"segresnet2d": {"batch_size": 4}, "cascade3d": {"roi_size": [4, 32, 32], "batch_size": 2}}[family]
    weights = weights_factory(family, "windows3", inference={**inference, "slab_mm": 5.0})
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    image = ct_image(head_volume((24, 64, 56)), spacing=(0.45, 0.45, 1.25))
    sitk.WriteImage(image, str(inp / "thin.nii.gz"))
    assert run(inp, out, weights) == 0
    mask = sitk.ReadImage(str(out / "thin.nii.gz"))
    assert mask.GetSize() == image.GetSize() and mask.GetSpacing() == pytest.approx(image.GetSpacing())
    record = json.loads((out / "results.json").read_text())["cases"][0]
    assert record["status"] == "ok" and record["thin_slices_averaged_to_mm"] == 5.0


def test_flipped_and_permuted_storage_gives_the_same_physical_mask(tmp_path, weights_factory):
    weights = weights_factory("segresnet2d", "combined9")
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    reference = ct_image(head_volume(seed=3))
    sitk.WriteImage(reference, str(inp / "lps.nii.gz"))
    sitk.WriteImage(sitk.DICOMOrient(reference, "RAS"), str(inp / "ras.nii.gz"))
    sitk.WriteImage(sitk.DICOMOrient(reference, "PIR"), str(inp / "pir.nii.gz"))
    assert run(inp, out, weights, "--no-mirror") == 0
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "lps.nii.gz")))
    assert 0 < expected.sum() < expected.size  # the comparison means something
    for name in ("ras", "pir"):
        stored = sitk.ReadImage(str(out / f"{name}.nii.gz"))
        assert stored.GetSize() != reference.GetSize() or name == "ras"
        in_reference_frame = sitk.Resample(stored, reference, sitk.Transform(), sitk.sitkNearestNeighbor)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(in_reference_frame), expected)


def test_grand_challenge_layout_writes_one_mha(tmp_path, weights_factory):
    weights = weights_factory()
    inp, out = tmp_path / "in", tmp_path / "out"
    (inp / "images" / "ct").mkdir(parents=True)
    sitk.WriteImage(ct_image(head_volume()), str(inp / "images" / "ct" / "0d9e.mha"))
    (inp / "inputs.json").write_text(json.dumps(
        [{"interface": {"slug": "ct-image", "super_kind": "Image", "relative_path": "images/ct"}}]))
    assert run(inp, out, weights, "--output-slug", "ich") == 0
    assert [p.name for p in (out / "images" / "ich").iterdir()] == ["0d9e.mha"]


def test_bad_case_is_recorded_and_others_still_run(tmp_path, weights_factory, capsys):
    weights = weights_factory()
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    (inp / "a_broken.nii.gz").write_bytes(b"not an image")
    sitk.WriteImage(ct_image(head_volume()), str(inp / "b_good.nii.gz"))
    assert run(inp, out, weights) == 1
    records = {r["case"]: r for r in json.loads((out / "results.json").read_text())["cases"]}
    assert records["a_broken"]["status"] == "error" and "a_broken.nii.gz" in records["a_broken"]["message"]
    assert records["b_good"]["status"] == "ok" and (out / "b_good.nii.gz").is_file()
    assert not (out / "a_broken.nii.gz").exists()
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "1 of 2 case(s) failed" in last and "a_broken.nii.gz" in last
    assert sorted(p.name for p in out.iterdir()) == ["b_good.nii.gz", "results.json"]


def test_tampered_weights_are_refused_before_any_case(tmp_path, weights_factory, capsys):
    weights = weights_factory()
    with (weights / "fold1.pt").open("r+b") as handle:
        handle.seek(200)
        handle.write(b"\x00\x01\x02")
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    sitk.WriteImage(ct_image(head_volume()), str(inp / "x.nii.gz"))
    assert run(inp, out, weights) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fold1.pt" in err[0] and "SHA-256" in err[0]
    assert not out.exists()


def test_missing_weights_file_is_refused(tmp_path, weights_factory, capsys):
    weights = weights_factory()
    (weights / "fold0.pt").unlink()
    inp = tmp_path / "in"
    inp.mkdir()
    assert run(inp, tmp_path / "out", weights) == 2
    err = capsys.readouterr().err
    assert "fold0.pt" in err and "missing" in err


def test_empty_input_folder_fails_with_a_reason(tmp_path, weights_factory, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    assert run(inp, tmp_path / "out", weights_factory()) == 2
    assert "no CT images found" in capsys.readouterr().err


def test_a_2d_slice_is_segmented_as_a_5_mm_slice_and_answered_in_2d(tmp_path, weights_factory):
    """Single real slices often come as 2D files: the same mask as the slice stored as a 5 mm volume."""
    weights = weights_factory("segresnet2d", "windows3", postprocess={"never_empty": True})
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    hu = head_volume(seed=5)[3]
    flat = sitk.GetImageFromArray(hu)
    flat.SetSpacing((0.45, 0.5))
    flat.SetOrigin((-12.0, 30.5))
    flat.SetDirection((-1, 0, 0, -1))  # as ITK reads a 2D NIfTI written from a RAS affine
    sitk.WriteImage(flat, str(inp / "flat.nii.gz"))
    sitk.WriteImage(sitk.JoinSeries(flat), str(inp / "one.nii.gz"))  # 1 mm: differs from the assumed 5 mm
    volume = ct_image(hu[None], spacing=(0.45, 0.5, 5.0), origin=(-12.0, 30.5, 0.0),
                      direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    sitk.WriteImage(volume, str(inp / "thick.nii.gz"))
    assert run(inp, out, weights) == 0
    mask = sitk.ReadImage(str(out / "flat.nii.gz"))
    assert mask.GetDimension() == 2 and mask.GetSize() == flat.GetSize()
    assert mask.GetSpacing() == pytest.approx(flat.GetSpacing())
    np.testing.assert_allclose(mask.GetOrigin(), flat.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(mask.GetDirection(), flat.GetDirection())
    thick = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "thick.nii.gz")))[0]
    assert 0 < thick.sum() < thick.size  # the comparison means something
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), thick)
    records = {r["case"]: r for r in json.loads((out / "results.json").read_text())["cases"]}
    assert records["flat"]["slice_mm_assumed"] == 5.0 and records["thick"]["slice_mm_assumed"] is None
    assert records["flat"]["volume_ml"] == records["thick"]["volume_ml"]
    assert records["one"]["slice_mm_assumed"] is None and records["one"]["volume_ml"] < records["flat"]["volume_ml"]
