"""The QC picture (process.py --qc): valid PNG, slices with most blood, outline drawn, atomic write."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

import model.qc
from model.layouts import Case
from model.outputs import QcRequest, write_case_outputs
from model.qc import OUTLINE_RGB, TILE, pick_slices, write_qc_png
from model.weights import load_manifest
from tests.conftest import head_volume, tiny_weights

HU = head_volume((10, 64, 56)).astype(np.float32)


def test_slices_with_most_blood_first_else_the_middle():
    mask = np.zeros((10, 8, 8), np.uint8)
    mask[[1, 4, 7], 2:4, 2:4] = 1
    mask[4, :, :] = 1
    assert pick_slices(mask, 2) == [1, 4]  # 4 has most, then 1 (stable) — shown in slice order
    assert pick_slices(mask) == [1, 4, 7]  # never a slice without blood when some has it
    assert pick_slices(np.zeros((10, 8, 8), np.uint8)) == [2, 3, 4, 5, 6, 7]
    assert pick_slices(np.zeros((1, 8, 8), np.uint8)) == [0]


def test_png_is_written_with_an_outline(tmp_path):
    mask = np.zeros(HU.shape, np.uint8)
    mask[2:6, 20:32, 14:28] = 1
    path = tmp_path / "qc" / "case.png"
    write_qc_png(HU, mask, (5.0, 0.45, 0.45), "case: 1.23 mL haemorrhage", path)
    assert [p.name for p in path.parent.iterdir()] == ["case.png"]  # no temporary file left
    with Image.open(path) as picture:
        assert picture.format == "PNG"
        pixels = np.asarray(picture.convert("RGB"))
    assert pixels.shape[1] == 3 * TILE  # four slices with blood: a row of three, then one
    red = np.all(pixels == OUTLINE_RGB, axis=-1)
    assert red.sum() > 100
    first_tile = red[28:28 + TILE, :TILE]  # below the title band
    rows, columns = np.flatnonzero(first_tile.any(axis=1)), np.flatnonzero(first_tile.any(axis=0))
    box = (rows.max() - rows.min() + 1) * (columns.max() - columns.min() + 1)
    assert first_tile.sum() < 0.5 * box  # an outline around the blood, not a filled region


def test_a_failing_output_removes_the_case_files_written_before(tmp_path, monkeypatch):
    """The QC picture is written after the mask; when it fails, the mask goes too (nothing half-done)."""
    tiny_weights(tmp_path / "w")
    case = Case("c", tmp_path / "c.nii.gz", tmp_path / "out" / "c.nii.gz")
    mask = sitk.GetImageFromArray(np.zeros((2, 4, 4), np.uint8))

    def disk_full(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(model.qc, "write_qc_png", disk_full)
    request = QcRequest(tmp_path / "out" / "qc" / "c.png", HU, np.zeros(HU.shape, np.uint8), (5.0, 0.45, 0.45), "c")
    with pytest.raises(OSError, match="No space"):
        write_case_outputs(case, mask, load_manifest(tmp_path / "w"), request)
    assert not case.output_path.exists()
