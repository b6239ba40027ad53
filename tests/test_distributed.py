"""Two CPU processes under torchrun (Gloo) train exactly as one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_training import write_dataset

from model.families import build_network

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("average", [[], ["--average-from", "1"]], ids=["cosine", "averaged"])
def test_two_gloo_processes_equal_one_process(tmp_path: Path, average: list[str]) -> None:
    dataset = write_dataset(tmp_path / "ds", 4)
    args = ["train.py", "fit", "--data", str(dataset), "--fold", "0", "--folds", "2", "--epochs", "1",
            "--steps-per-epoch", "3", "--batch-size", "4", "--lr", "0.003", "--init-filters", "4",
            "--blocks-down", "1", "1", "1", "--dsdepth", "2", "--crop", "32", "32", "--workers", "0",
            "--threads", "1", "--device", "cpu", "--norm", "instance", "--fp32", *average]
    # averaged: every step of the one epoch averaged, on each rank
    # --fp32: bf16 autocast (chosen on CPUs with native bf16) rounds differently when the batch is split
    # instance norm: with batch norm the statistics are the global batch's only through SyncBatchNorm,
    # which training uses on GPUs but PyTorch implements for GPUs only
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {"one": [sys.executable, *args], "two": [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    "--nproc_per_node", "2", *args]}
    for name, command in runs.items():
        done = subprocess.run([*command, "--out", str(tmp_path / name)], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    one = torch.load(tmp_path / "one/fold0/last.pt", weights_only=True)
    two = torch.load(tmp_path / "two/fold0/last.pt", weights_only=True)
    torch.manual_seed(0)  # the initial weights of fold 0 with --seed 0
    start = build_network("segresnet2d", 3, json.loads((tmp_path / "one/config.json").read_text())["network"])
    for key, value in one.get("trained", {}).items():  # the weights the average follows agree too
        torch.testing.assert_close(two["trained"][key], value, rtol=1e-4, atol=1e-5)
    moved = 0.0
    for key, value in one["model"].items():
        torch.testing.assert_close(two["model"][key], value, rtol=1e-4, atol=1e-5)
        moved = max(moved, float((value - start.state_dict()[key]).abs().max()))
    assert moved > 1e-3  # training did change the weights, far beyond the tolerance
    log_one = (tmp_path / "one/fold0/training_log.csv").read_text().splitlines()[1].split(",")
    log_two = (tmp_path / "two/fold0/training_log.csv").read_text().splitlines()[1].split(",")
    assert abs(float(log_one[1]) - float(log_two[1])) < 1e-4  # same mean training loss
    assert log_one[2] == log_two[2] or abs(float(log_one[2]) - float(log_two[2])) < 1e-3  # validation Dice
