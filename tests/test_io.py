"""Reading, case discovery for both layouts, canonical orientation and geometry round trips."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from model.io import (
    CaseError,
    case_name,
    from_canonical,
    mask_image,
    read_image,
    to_canonical,
    write_image_atomic,
)
from model.layouts import discover_cases
from tests.conftest import ct_image, head_volume


def touch_image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(ct_image(head_volume((2, 8, 8))), str(path))


@pytest.mark.parametrize(("name", "stem"), [("001.nii.gz", "001"), ("a b.NII", "a b"), ("x.mha", "x"),
                                            ("scan.v2.nrrd", "scan.v2"), ("ü.tif", "ü")])
def test_case_name_strips_image_extension(tmp_path, name, stem):
    assert case_name(tmp_path / name) == stem


def test_flat_layout(tmp_path):
    inp = tmp_path / "in"
    for name in ("002.nii.gz", "001.nii", "003.mha", "004.nrrd"):
        touch_image(inp / name)
    (inp / "notes.txt").write_text("x")
    (inp / ".hidden.nii.gz").write_bytes(b"")
    cases = discover_cases(inp, tmp_path / "out")
    assert [c.name for c in cases] == ["001", "002", "003", "004"]
    assert cases[1].output_path == tmp_path / "out" / "002.nii.gz"


def test_grand_challenge_layout_without_inputs_json(tmp_path):
    inp = tmp_path / "in"
    touch_image(inp / "images" / "ct" / "3f1c-uuid.mha")
    cases = discover_cases(inp, tmp_path / "out", "ich-mask")
    assert [(c.name, c.output_path) for c in cases] == [
        ("3f1c-uuid", tmp_path / "out" / "images" / "ich-mask" / "3f1c-uuid.mha")]


def test_grand_challenge_layout_follows_inputs_json_relative_path(tmp_path):
    inp = tmp_path / "in"
    touch_image(inp / "images" / "ct" / "abc.mha")
    touch_image(inp / "images" / "other" / "ignored.mha")
    (inp / "inputs.json").write_text(json.dumps([
        {"interface": {"slug": "ct-image", "kind": "Image", "super_kind": "Image", "relative_path": "images/ct"},
         "image": {"pk": "abc", "name": "head.nii.gz"}},
        {"interface": {"slug": "age", "kind": "Integer", "super_kind": "Value", "relative_path": "age.json"},
         "value": 71}]))
    cases = discover_cases(inp, tmp_path / "out")
    assert [c.input_path for c in cases] == [inp / "images" / "ct" / "abc.mha"]


def test_inputs_json_escaping_the_input_folder_is_refused(tmp_path):
    inp = tmp_path / "in"
    touch_image(tmp_path / "secret" / "x.mha")
    inp.mkdir()
    (inp / "inputs.json").write_text(json.dumps([
        {"interface": {"super_kind": "Image", "relative_path": "../secret"}}]))
    (cases,) = discover_cases(inp, tmp_path / "out")
    assert "leaves the input folder" in cases.problem


def test_unreadable_file_gives_one_line_error(tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(CaseError) as info:
        read_image(bad)
    assert "broken.nii.gz" in str(info.value) and "\n" not in str(info.value)


OBLIQUE = tuple(sitk.VersorTransform((0.1, 0.2, 0.95), 0.35).GetMatrix())


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, -1, 0, 0, 0, 1), OBLIQUE])
def test_mask_keeps_exact_geometry(tmp_path, direction):
    image = ct_image(head_volume(), spacing=(0.43, 0.47, 4.8), origin=(10.5, -3.25, 99.0), direction=direction)
    canonical = to_canonical(image)
    mask = (sitk.GetArrayFromImage(canonical) > 50).astype(np.uint8)
    out = mask_image(mask, canonical, image)
    write_image_atomic(out, tmp_path / "m.nii.gz")
    back = sitk.ReadImage(str(tmp_path / "m.nii.gz"))
    assert back.GetSize() == image.GetSize()
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), atol=1e-6)
    assert back.GetPixelID() == sitk.sitkUInt8
    # the mask marks exactly the voxels that were bright in the stored array
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), (sitk.GetArrayFromImage(image) > 50))
    assert list(tmp_path.iterdir()) == [tmp_path / "m.nii.gz"]


@pytest.mark.parametrize("storage", ["RAS", "LPI", "PIR", "SLA", "IRP"])
def test_any_storage_order_reads_the_same_canonical_array(storage):
    reference = ct_image(head_volume(), direction=OBLIQUE)
    stored = sitk.DICOMOrient(reference, storage)
    assert stored.GetSize() != reference.GetSize() or storage in ("RAS", "LPI")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(to_canonical(stored)),
                                  sitk.GetArrayFromImage(to_canonical(reference)))
    restored = from_canonical(to_canonical(stored), stored)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(restored), sitk.GetArrayFromImage(stored))
