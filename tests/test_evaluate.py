"""evaluate.py end to end on tiny files: pairing, per-case problems, outputs, ranking and the report."""

from __future__ import annotations

import base64
import csv
import json
import math
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

import evaluate
from evaluation.metrics import score_case
from evaluation.report import LABEL_RGB, PREDICTION_RGB, CaseSlice, slice_rgb
from evaluation.scoring import Pair, evaluate_pair, pair_files, rank, summarise

PIXDIM = (0.45, 0.45, 5.0)
SHAPE_XYZ = (24, 20, 6)


def write_nifti(array_xyz: np.ndarray, path: Path, pixdim: tuple[float, float, float] = PIXDIM) -> Path:
    """A NIfTI file the way the challenge's were read: nibabel array (x, y, z), spacing in pixdim."""
    image = nib.Nifti1Image(array_xyz, np.diag([*pixdim, 1.0]))
    image.header.set_zooms(pixdim)
    nib.save(image, str(path))
    return path


def blob(low: tuple[int, int, int], high: tuple[int, int, int], dtype: type = np.uint8) -> np.ndarray:
    mask = np.zeros(SHAPE_XYZ, dtype)
    mask[low[0]: high[0], low[1]: high[1], low[2]: high[2]] = 1
    return mask


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    """Labels and predictions covering each pairing rule and per-case problem."""
    labels, preds, images = tmp_path / "labels", tmp_path / "preds", tmp_path / "images"
    for folder in (labels, preds, images):
        folder.mkdir()
    lab_a, pred_a = blob((4, 5, 1), (12, 14, 4)), blob((6, 5, 1), (13, 15, 5))
    write_nifti(lab_a, labels / "a.nii.gz")
    write_nifti(pred_a, preds / "a.nii")  # .nii against .nii.gz still pairs
    write_nifti(blob((2, 2, 2), (5, 5, 3)), labels / "b.nii.gz")  # no prediction
    write_nifti(blob((2, 2, 2), (5, 5, 3)), labels / "c.nii.gz")
    write_nifti(np.zeros((10, 10, 6), np.uint8), preds / "c.nii.gz")  # shape mismatch
    write_nifti(np.zeros(SHAPE_XYZ, np.uint8), labels / "d.nii.gz")  # empty label
    write_nifti(blob((1, 1, 1), (3, 3, 2)), preds / "d.nii.gz")
    write_nifti(blob((1, 1, 1), (3, 3, 2)), preds / "orphan.nii.gz")  # no label
    write_nifti(blob((3, 4, 1), (9, 9, 3)), preds / "e.nii.gz")
    mha = sitk.GetImageFromArray(blob((3, 3, 1), (9, 9, 3)).transpose())
    mha.CopyInformation(sitk.ReadImage(str(preds / "e.nii.gz")))
    sitk.WriteImage(mha, str(labels / "e.mha"))
    hu = np.full(SHAPE_XYZ, -1000, np.int16)
    hu[2:22, 2:18] = 35
    write_nifti(hu, images / "a.nii.gz")
    return {"labels": labels, "preds": preds, "images": images, "lab_a": lab_a, "pred_a": pred_a}


def test_pairing_by_case_name(folders: dict) -> None:
    pairs, unmatched = pair_files(folders["preds"], folders["labels"], folders["images"])
    assert [p.name for p in pairs] == ["a", "b", "c", "d", "e"]
    by_name = {p.name: p for p in pairs}
    assert by_name["a"].prediction.name == "a.nii" and by_name["a"].image.name == "a.nii.gz"
    assert by_name["b"].prediction is None
    assert unmatched == ["orphan"]


def test_two_files_for_one_case_are_refused(folders: dict) -> None:
    write_nifti(folders["lab_a"], folders["labels"] / "a.nii")
    with pytest.raises(ValueError, match="two files for case 'a'"):
        pair_files(folders["preds"], folders["labels"])


def test_spacing_comes_from_label_header_in_array_axis_order(folders: dict, tmp_path: Path) -> None:
    """The harness (SimpleITK, z-y-x) scores like the official script (nibabel x-y-z with pixdim)."""
    pred_path = write_nifti(folders["pred_a"], tmp_path / "a.nii.gz", pixdim=(1.0, 1.0, 1.0))  # ignored
    got = evaluate_pair(Pair("a", folders["labels"] / "a.nii.gz", pred_path))
    label = nib.load(str(folders["labels"] / "a.nii.gz"))
    expected = score_case(np.asarray(nib.load(str(pred_path)).dataobj), np.asarray(label.dataobj),
                          tuple(label.header["pixdim"][1:4]))
    for metric in ("dsc", "hd", "rvd", "nsd"):
        assert getattr(got, metric) == pytest.approx(getattr(expected, metric), abs=1e-9)
    assert got.hd != pytest.approx(score_case(folders["pred_a"].T, folders["lab_a"].T, PIXDIM).hd)
    assert "header differs" in got.note
    assert got.label_ml == pytest.approx(folders["lab_a"].sum() * 0.45 * 0.45 * 5.0 / 1000, rel=1e-6)


def test_cli_writes_metrics_summary_and_report(folders: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    status = evaluate.main(["--predictions", str(folders["preds"]), "--labels", str(folders["labels"]),
                            "--output-dir", str(out), "--images", str(folders["images"]), "--workers", "2",
                            "--quiet"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "orphan" in printed and "4/5 cases scored" in printed

    rows = list(csv.reader((out / "metrics.csv").open()))
    assert rows[0][:5] == ["case", "dsc", "hd", "rvd", "nsd"]
    table = {row[0]: dict(zip(rows[0], row, strict=True)) for row in rows[1:]}
    assert set(table) == {"a", "b", "c", "d", "e"}
    assert table["b"]["hd"] == "inf" and float(table["b"]["rvd"]) == 1.0 and float(table["b"]["nsd"]) == 0.0
    assert "no prediction" in table["b"]["note"]
    assert "shape mismatch" in table["c"]["note"] and table["c"]["dsc"] == "nan"
    assert table["d"]["rvd"] == "nan" and "empty label" in table["d"]["note"]
    assert 0 < float(table["e"]["dsc"]) < 1 and table["e"]["note"] == ""

    summary = json.loads((out / "summary.json").read_text(),
                         parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert summary["scored"] == 4 and summary["unmatched_predictions"] == ["orphan"]
    assert set(summary["not_scored"]) == {"c"}
    hd = summary["metrics"]["hd"]
    assert hd["mean"] == "inf" and hd["inf"] == 2 and hd["count"] == 4
    assert hd["finite_mean"] == pytest.approx(np.mean([float(table[c]["hd"]) for c in "ae"]))
    rvd = summary["metrics"]["rvd"]
    assert rvd["count"] == 3 and rvd["nan"] == 1
    assert rvd["mean"] == pytest.approx(np.mean([float(table[c]["rvd"]) for c in "abe"]))

    report = (out / "report.html").read_text()
    assert report.count('id="case-') == 4 and "http" not in report
    pictures = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", report)
    assert len(pictures) == 4 + 3  # four cases and three plots
    assert all(base64.b64decode(p).startswith(b"\x89PNG") for p in pictures)


def test_non_binary_prediction_is_flagged(folders: dict, tmp_path: Path) -> None:
    path = write_nifti(folders["pred_a"] * 0.8, tmp_path / "a.nii.gz")
    result = evaluate_pair(Pair("a", folders["labels"] / "a.nii.gz", path))
    assert "other than 0/1" in result.note and "empty prediction" in result.note and result.pred_voxels == 0


def test_picture_draws_outlines_in_two_colours_over_the_brain_window() -> None:
    label = np.zeros((40, 40), bool)
    label[10:20, 10:20] = True
    prediction = np.roll(label, 8, axis=1)
    ct = np.full((40, 40), 40.0)  # mid-window grey
    rgb = slice_rgb(CaseSlice(0, label, prediction, ct, (0.45, 0.45)), width=80)
    assert rgb.shape == (80, 80, 3)
    colours = {tuple(c) for c in rgb.reshape(-1, 3)}
    assert {LABEL_RGB, PREDICTION_RGB, (128, 128, 128)} <= colours
    no_ct = slice_rgb(CaseSlice(0, label, prediction, None, (0.9, 0.45)), width=80)
    assert no_ct.shape == (160, 80, 3) and no_ct[0, 0].tolist() == [0, 0, 0]


def test_rank_ties_equal_means_and_averages_ranks() -> None:
    means = {"A": {"dsc": 0.70, "hd": math.inf, "rvd": 0.20, "nsd": 0.50},
             "B": {"dsc": 0.72, "hd": math.inf, "rvd": 0.30, "nsd": 0.55},
             "C": {"dsc": 0.69, "hd": 35.0, "rvd": 0.21, "nsd": 0.53}}
    rows = {r["name"]: r for r in rank(means)}
    assert [rows[n]["rank_hd"] for n in "ABC"] == [2, 2, 1]
    assert [rows[n]["rank_dsc"] for n in "ABC"] == [2, 1, 3]
    assert rows["C"]["mean_rank"] == pytest.approx((3 + 1 + 2 + 2) / 4)
    ranked = rank(means)
    assert [(r["name"], r["position"]) for r in ranked] == [("B", 1), ("A", 2), ("C", 2)]


def test_rank_cli_reads_summaries_and_scores_folders(folders: dict, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    scored = tmp_path / "scored"
    scored.mkdir()
    summary = summarise([evaluate_pair(Pair("a", folders["labels"] / "a.nii.gz", folders["preds"] / "a.nii"))])
    (scored / "summary.json").write_text(json.dumps(summary))
    perfect = tmp_path / "perfect"
    perfect.mkdir()
    write_nifti(folders["lab_a"], perfect / "a.nii.gz")
    labels_a = tmp_path / "labels_a"
    labels_a.mkdir()
    (labels_a / "a.nii.gz").write_bytes((folders["labels"] / "a.nii.gz").read_bytes())
    status = evaluate.main(["rank", str(scored), str(perfect), "--labels", str(labels_a),
                            "--output-dir", str(tmp_path), "--workers", "1", "--quiet"])
    assert status == 0
    rows = list(csv.DictReader((tmp_path / "ranking.csv").open()))
    assert [r["name"] for r in rows] == ["perfect", "scored"] and rows[0]["position"] == "1"
    assert "perfect" in capsys.readouterr().out


def test_bad_arguments_give_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    status = evaluate.main(["--predictions", str(tmp_path), "--labels", str(tmp_path / "missing"),
                            "--output-dir", str(tmp_path / "out")])
    assert status == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert evaluate.main(["rank", str(tmp_path), "--quiet"]) == 2


def test_a_2d_slice_pair_is_scored_as_a_volume_of_one_5_mm_slice(tmp_path):
    """Real slices with expert masks come as 2D files: scored as the same slice 5 mm thick."""
    label, prediction = np.zeros((40, 36), np.uint8), np.zeros((40, 36), np.uint8)
    label[10:20, 8:18] = 1
    prediction[12:22, 8:16] = 1
    paths = {}
    for name, thickness in (("flat", None), ("thick", 5.0)):
        for kind, values in (("label", label), ("pred", prediction)):
            image = sitk.GetImageFromArray(values if thickness is None else values[None])
            image.SetSpacing((0.5, 0.5) if thickness is None else (0.5, 0.5, thickness))
            paths[name, kind] = tmp_path / f"{name}_{kind}.nii.gz"
            sitk.WriteImage(image, str(paths[name, kind]))
    flat = evaluate_pair(Pair("flat", paths["flat", "label"], paths["flat", "pred"]))
    thick = evaluate_pair(Pair("thick", paths["thick", "label"], paths["thick", "pred"]))
    assert flat.note == thick.note == ""
    assert flat.dsc == pytest.approx(2 * 64 / 180) and flat.dsc == thick.dsc
    assert (flat.hd, flat.rvd, flat.nsd) == (thick.hd, thick.rvd, thick.nsd)
    assert flat.label_ml == pytest.approx(100 * 0.25 * 5 / 1000) and flat.label_ml == pytest.approx(thick.label_ml)
