"""The accuracy benchmark: the HU-rule baseline, and the model-vs-rule table by bleed size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from bench import accuracy
from bench.hu_rule import hu_rule_mask
from model.anatomy import intracranial
from tests.conftest import ct_image

SPACING_ZYX = (5.0, 0.45, 0.45)


def skull_head(blood: bool, shape: tuple[int, int, int] = (6, 96, 96), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Air, a 1000 HU skull ring with 50 HU scalp outside, 32 HU brain, optionally a 70 HU bleed."""
    rng = np.random.default_rng(seed)
    _, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    r = np.broadcast_to(np.hypot(y - shape[1] / 2, x - shape[2] / 2), shape)
    hu = np.full(shape, -1000.0)
    hu[r < 44] = 60.0  # scalp and temporalis: inside the blood window, outside the skull
    hu[r < 40] = 1000.0
    hu[r < 34] = 32.0
    label = np.zeros(shape, dtype=np.uint8)
    if blood:
        label[1:4, 40:52, 30:44] = 1
        hu[label > 0] = 70.0
    return (hu + rng.normal(0, 3, shape)).astype(np.float32), label


def test_hu_rule_takes_blood_inside_the_skull_and_nothing_outside_it():
    hu, label = skull_head(True)
    mask = hu_rule_mask(hu, SPACING_ZYX)
    assert mask[label > 0].mean() > 0.8
    inside = intracranial(hu, SPACING_ZYX)
    assert not mask[~inside].any()  # the 60 HU scalp is outside the skull
    normal, _ = skull_head(False)
    assert hu_rule_mask(normal, SPACING_ZYX).sum() == 0


def test_accuracy_table_bins_cases_and_scores_normal_heads(tmp_path: Path, weights_factory, capsys):
    root = tmp_path / "set" / "evaluation"
    for index, blood in enumerate((True, False, True)):
        hu, label = skull_head(blood, seed=index)
        for kind, array in (("data", hu.astype(np.int16)), ("label", label)):
            (root / kind).mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(ct_image(array), str(root / kind / f"{index + 1:03d}.nii.gz"))
    out = tmp_path / "rows.json"
    weights = weights_factory(postprocess={"never_empty": False})
    record = [{"case": "001", "lesions": [{"subtype": "subdural", "volume_ml": 0.5},  # the largest one names it
                                          {"subtype": "subarachnoid", "volume_ml": 0.2}]},
              {"case": "002", "lesions": []},
              {"case": "003", "lesions": [{"subtype": "epidural", "volume_ml": 0.0},  # not labelled: no name
                                          {"subtype": "subarachnoid", "volume_ml": 0.4}]}]
    (tmp_path / "set" / "cases.json").write_text(json.dumps(record))  # the generator's record
    assert accuracy.main(["--data", str(tmp_path / "set"), "--weights", str(weights), "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["case"] for r in rows] == ["001", "002", "003"]
    assert [r.get("subtype") for r in rows] == ["subdural", None, "subarachnoid"]
    assert rows[1]["true_ml"] == 0 and rows[1]["rule_ml"] == 0 and rows[1]["model_dsc"] is None
    assert rows[0]["rule_dsc"] > 0.8 and rows[0]["true_ml"] > 0
    printed = capsys.readouterr().out
    assert "| < 1 mL |" in printed and "| no blood: mL painted (mean / max) | 1 |" in printed
    assert f"| subdural | 1 | {rows[0]['model_dsc']:.3f} | {rows[0]['rule_dsc']:.3f} |" in printed
    assert "| subarachnoid | 1 |" in printed and "| epidural |" not in printed
    assert "cpu=" in printed and "001: true" in printed  # each case's line is named by its case
    assert "| flag when fold Dice < |" in printed  # two folds: how their agreement flags cases
    assert all(r["hu_shift"] == 0.0 for r in rows)  # no trained brain range in these weights
    assert accuracy.main(["--data", str(tmp_path / "set"), "--weights", str(weights), "--out", str(out),
                          "--offset-hu", "100"]) == 0
    moved = json.loads(out.read_text())  # blood at 170 HU: outside the rule's 50-90 HU
    assert moved[0]["rule_dsc"] == 0.0 and moved[0]["true_ml"] == rows[0]["true_ml"]
    capsys.readouterr()
    one_fold = weights_factory(folds=1, postprocess={"never_empty": False})
    assert accuracy.main(["--data", str(tmp_path / "set"), "--weights", str(one_fold), "--out", str(out)]) == 0
    assert "fold Dice" not in capsys.readouterr().out  # one fold agrees with itself: no review table


def test_picked_slices_are_the_smallest_median_and_largest_cross_sections():
    label = np.zeros((7, 20, 20), dtype=np.uint8)
    for z, side in ((0, 2), (1, 4), (2, 5), (4, 6), (5, 8)):  # areas 4, 16, 25, 36, 64; slices 3 and 6 empty
        label[z, :side, :side] = 1
    assert accuracy.picked_slices(label, min_pixels=10) == [1, 4, 5]  # 16, 36 (median of 16/25/36/64), 64
    assert accuracy.picked_slices(label[:2], min_pixels=10) == [1]
    assert accuracy.picked_slices(np.zeros_like(label)) == []


def test_single_slice_mode_scores_one_slice_inputs_by_their_own_blood(tmp_path: Path, weights_factory, capsys):
    root = tmp_path / "set" / "evaluation"
    hu, label = skull_head(True)
    for kind, array in (("data", hu.astype(np.int16)), ("label", label)):
        (root / kind).mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(ct_image(array), str(root / kind / "001.nii.gz"))
    out = tmp_path / "rows.json"
    weights = weights_factory(postprocess={"never_empty": False})
    assert accuracy.main(["--data", str(tmp_path / "set"), "--weights", str(weights), "--out", str(out),
                          "--single-slices"]) == 0
    rows = json.loads(out.read_text())
    assert [r["case"] for r in rows] == ["001_z01", "001_z02", "001_z03"]  # the bleed's three slices
    one_slice_ml = 12 * 14 * np.prod(SPACING_ZYX) / 1000
    assert all(abs(r["true_ml"] - one_slice_ml) < 1e-3 for r in rows)
    assert all(r["rule_dsc"] > 0.8 for r in rows)  # the rule finds the bleed in one slice too
    printed = capsys.readouterr().out
    assert "| < 0.5 mL | 3 |" in printed and "slices=3" in printed and "fold Dice" not in printed


def test_another_scanner_moves_blurs_and_sharpens_each_slice_only_in_plane():
    rng = np.random.default_rng(0)
    hu = rng.normal(30, 5, (3, 40, 40)).astype(np.float32)
    hu[:, 10:20, 10:20] = 1000.0  # bone: its edge is what a kernel changes
    spacing = (5.0, 0.5, 0.5)
    assert accuracy.another_scanner(hu, spacing) is hu
    np.testing.assert_allclose(accuracy.another_scanner(hu, spacing, offset_hu=10), hu + 10)
    soft = accuracy.another_scanner(hu, spacing, blur_mm=1.0)
    sharp = accuracy.another_scanner(hu, spacing, sharpen=0.7)
    brain = (slice(None), slice(30, 40), slice(30, 40))
    assert soft[brain].std() < hu[brain].std() < sharp[brain].std()  # noise smoothed, noise raised
    assert soft[:, 21, 15].mean() > hu[:, 21, 15].mean() + 50  # bone spread under its edge
    assert sharp[:, 21, 15].mean() < hu[:, 21, 15].mean() - 50  # the sharp kernel's undershoot
    edited = hu.copy()
    edited[0] += 100  # in-plane only: one slice's change does not reach the next
    np.testing.assert_allclose(accuracy.another_scanner(edited, spacing, blur_mm=1.0, sharpen=0.7)[1:],
                               accuracy.another_scanner(hu, spacing, blur_mm=1.0, sharpen=0.7)[1:], atol=1e-3)
