"""The family / width / pixel-size sweep: each run's logged out-of-fold Dice and training hours beside its
ensemble's seconds per case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench import sweep
from model.weights import build_model
from training.validation import probe_manifest

LOG = "epoch,train_loss,val_dice,val_cases,lr,seconds\n1,0.9,nan,0,1e-3,1800\n{dice_row}3,0.7,0.9,4,1e-3,12\n"


def write_run(run: Path, config: dict, fold: str, state: dict, dice_at_epoch_2: float) -> None:
    """What ``train.py fit`` leaves: the run's config, and one fold's (or stage's) last checkpoint and log."""
    folder = run / fold
    folder.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(config))
    torch.save({"model": state}, folder / "last.pt")
    (folder / "training_log.csv").write_text(LOG.format(dice_row=f"2,0.8,{dice_at_epoch_2},4,1e-3,1800\n"))


def tiny_run(root: Path, name: str, filters: int, spacing: float, dice_at_epoch_2: float) -> Path:
    """A run folder as ``train.py fit`` leaves it: config, the fold's last checkpoint and its log."""
    run = root / name
    network = {"init_filters": filters, "blocks_down": [1, 1], "dsdepth": 1}
    inference = {"spacing_zyx": [None, spacing, spacing], "batch_size": 4}
    config = {"family": "segresnet2d", "input_mode": "windows3", "network": network, "inference": inference}
    model = build_model(probe_manifest("segresnet2d", "windows3", network, inference))
    write_run(run, config, "fold1", model.state_dict(), dice_at_epoch_2)
    return run


def tiny_cascade_run(root: Path, dice_at_epoch_2: float) -> Path:
    """A 3D cascade run with only stage 1 trained so far: its checkpoint and log sit in ``fold1/stage1``."""
    run = root / "cascade"
    network = {"pool_kernels": [[1, 2, 2], [2, 2, 2]], "init_filters": 4, "max_filters": 16}
    inference = {"spacing_zyx": [5.0, 1.8, 1.8], "batch_size": 2, "roi_size": [4, 32, 32]}
    config = {"family": "cascade3d", "input_mode": "windows3", "network": network, "inference": inference}
    model = build_model(probe_manifest("cascade3d", "windows3", network, inference))
    stage1 = {key: value + 1 for key, value in model.stage1.state_dict().items()}  # unlike a fresh network's
    write_run(run, config, "fold1/stage1", stage1, dice_at_epoch_2)
    return run


def test_sweep_reads_the_asked_epoch_and_times_each_configuration(tmp_path: Path, capsys) -> None:
    coarse = tiny_run(tmp_path, "coarse", 4, 1.8, 0.41)
    fine = tiny_run(tmp_path, "fine", 8, 0.9, 0.52)
    out = tmp_path / "rows.json"
    assert sweep.main([str(coarse), str(fine), "--fold", "1", "--epoch", "2", "--folds", "2", "--slices", "3",
                       "--precision", "fp32", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["val_dice"] for r in rows] == [0.41, 0.52]  # epoch 2's row, not the last one
    assert [r["train_hours"] for r in rows] == [1.0, 1.0]  # epochs 1 and 2, not 3
    assert [r["init_filters"] for r in rows] == [4, 8] and [r["spacing_mm"] for r in rows] == [1.8, 0.9]
    assert rows[1]["ensemble_mb"] > 3 * rows[0]["ensemble_mb"]  # twice the width: about four times the weights
    assert all(r["seconds_per_case"] > 0 and r["path"] == "fp32" for r in rows)
    printed = capsys.readouterr().out
    assert printed.startswith("cpu: ") and "| fine | segresnet2d | 8 | 0.9 | 0.520 | 1.00 |" in printed


def test_a_cascade_with_stage_1_alone_is_read_from_its_stage_and_timed_whole(tmp_path: Path, monkeypatch,
                                                                              capsys) -> None:
    run = tiny_cascade_run(tmp_path, 0.37)
    loaded = []
    original = torch.nn.Module.load_state_dict

    def spy(module: torch.nn.Module, state: dict, *args, **kwargs):
        loaded.append(type(module).__name__)
        return original(module, state, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "load_state_dict", spy)
    out = tmp_path / "rows.json"
    assert sweep.main([str(run), "--fold", "1", "--epoch", "2", "--folds", "1", "--slices", "3",
                       "--precision", "fp32", "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert row["family"] == "cascade3d" and row["val_dice"] == 0.37 and row["train_hours"] == 1.0
    assert row["timed_untrained"] == ["stage2"] and loaded == ["UNet3D"]  # stage 1's weights, into stage 1 only
    assert row["seconds_per_case"] > 0
    assert "| cascade | cascade3d | 4 | 1.8 | 0.370 | 1.00 |" in capsys.readouterr().out


def test_a_run_without_a_last_checkpoint_is_refused(tmp_path: Path) -> None:
    run = tiny_run(tmp_path, "r", 4, 0.9, 0.5)
    (run / "fold1" / "last.pt").unlink()
    with pytest.raises(SystemExit, match="fold 1 has no last checkpoint"):
        sweep.main([str(run), "--fold", "1", "--epoch", "2", "--slices", "3"])


def test_unvalidated_epoch_reads_as_nan(tmp_path: Path) -> None:
    run = tiny_run(tmp_path, "r", 4, 0.9, 0.5)
    dice, hours = sweep.logged(run, 1, "", 1)
    assert dice != dice and hours == 0.5  # NaN: epoch 1 was not validated
    dice, hours = sweep.logged(run, 1, "", 9)
    assert dice != dice and hours == 3612 / 3600  # never reached: every logged epoch's time
