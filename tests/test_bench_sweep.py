"""The width / pixel-size sweep: each run's logged out-of-fold Dice beside its ensemble's seconds per case."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bench import sweep
from model.weights import build_model
from training.validation import probe_manifest


def tiny_run(root: Path, name: str, filters: int, spacing: float, dice_at_epoch_2: float) -> Path:
    """A run folder as ``train.py fit`` leaves it: config, the fold's last checkpoint and its log."""
    run = root / name
    network = {"init_filters": filters, "blocks_down": [1, 1], "dsdepth": 1}
    inference = {"spacing_zyx": [None, spacing, spacing], "batch_size": 4}
    config = {"family": "segresnet2d", "input_mode": "windows3", "network": network, "inference": inference}
    (run / "fold1").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(config))
    model = build_model(probe_manifest("segresnet2d", "windows3", network, inference))
    torch.save({"model": model.state_dict()}, run / "fold1" / "last.pt")
    (run / "fold1" / "training_log.csv").write_text(
        "epoch,train_loss,val_dice,val_cases,lr,seconds\n1,0.9,nan,0,1e-3,10\n"
        f"2,0.8,{dice_at_epoch_2},4,1e-3,12\n3,0.7,0.9,4,1e-3,12\n")
    return run


def test_sweep_reads_the_asked_epoch_and_times_each_configuration(tmp_path: Path, capsys) -> None:
    coarse = tiny_run(tmp_path, "coarse", 4, 1.8, 0.41)
    fine = tiny_run(tmp_path, "fine", 8, 0.9, 0.52)
    out = tmp_path / "rows.json"
    assert sweep.main([str(coarse), str(fine), "--fold", "1", "--epoch", "2", "--folds", "2", "--slices", "3",
                       "--precision", "fp32", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["val_dice"] for r in rows] == [0.41, 0.52]  # epoch 2's row, not the last one
    assert [r["init_filters"] for r in rows] == [4, 8] and [r["spacing_mm"] for r in rows] == [1.8, 0.9]
    assert rows[1]["ensemble_mb"] > 3 * rows[0]["ensemble_mb"]  # twice the width: about four times the weights
    assert all(r["seconds_per_case"] > 0 and r["path"] == "fp32" for r in rows)
    printed = capsys.readouterr().out
    assert printed.startswith("cpu: ") and "| fine | 8 | 0.9 | 0.520 |" in printed


def test_unvalidated_epoch_reads_as_nan(tmp_path: Path) -> None:
    run = tiny_run(tmp_path, "r", 4, 0.9, 0.5)
    assert sweep.val_dice(run, 1, 1) != sweep.val_dice(run, 1, 1)  # NaN
    assert sweep.val_dice(run, 1, 9) != sweep.val_dice(run, 1, 9)
