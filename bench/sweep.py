"""Network width and training pixel size, chosen by measurement: out-of-fold Dice against seconds per case.

    python3 bench/sweep.py RUN [RUN ...] --fold 3 --epoch 4 [--folds 5] [--slices 40] [--precision auto]

Every RUN is one configuration trained on the same split with the same schedule (``train.py fit``,
differing only in ``--init-filters`` or ``--spacing``). For each it prints the fold's validation
Dice at ``--epoch`` from its ``training_log.csv`` (the out-of-fold Dice training reports: threshold
0.5, no post-processing), the size of an ensemble of ``--folds`` such networks, and the seconds
that ensemble takes on a generated 512² × ``--slices`` head (:mod:`bench.case`, 0.45 mm pixels, so
the predictor resamples it to the run's spacing exactly as it would a real case) on the compute
path this CPU takes (:mod:`model.compute`). Timing uses the fold's own checkpoint repeated
``--folds`` times: the work per fold does not depend on the weights' values.

A speed result holds for the CPU it was measured on, so the CPU model is printed with the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.case import SPACING_XYZ, head_ct
from model.compute import PRECISIONS, choose_path, cpu_model
from model.predictor import EnsemblePredictor
from model.weights import build_model
from training.families import checkpoint_path
from training.validation import probe_manifest


def val_dice(run: Path, fold: int, epoch: int) -> float:
    """The validation Dice logged for ``epoch`` (NaN when that epoch was not validated or not reached)."""
    with (run / f"fold{fold}" / "training_log.csv").open() as handle:
        for row in csv.DictReader(handle):
            if int(row["epoch"]) == epoch:
                return float(row["val_dice"])
    return float("nan")


def measure(run: Path, fold: int, epoch: int, folds: int, hu: np.ndarray, precision: str) -> dict:
    """One configuration's row: its Dice at ``epoch``, ensemble size and seconds per case."""
    config = json.loads((run / "config.json").read_text())
    manifest = probe_manifest(config["family"], config["input_mode"], config["network"], config["inference"])
    state = torch.load(checkpoint_path(run, fold, "", "last"), map_location="cpu", weights_only=True)["model"]
    model = build_model(manifest, state).eval()
    device = torch.device("cpu")
    predictor = EnsemblePredictor([model] * folds, manifest, device, path=choose_path(device, precision, "auto"))
    spacing_zyx = tuple(float(s) for s in SPACING_XYZ[::-1])
    predictor.predict(hu[:4], spacing_zyx)  # warm-up: oneDNN picks its kernels on the first call
    start = time.perf_counter()
    predictor.predict(hu, spacing_zyx)
    seconds = time.perf_counter() - start
    parameters = sum(p.numel() for p in model.parameters())
    return {"run": run.name, "init_filters": config["network"]["init_filters"],
            "spacing_mm": config["inference"]["spacing_zyx"][-1], "val_dice": val_dice(run, fold, epoch),
            "ensemble_mb": round(folds * parameters * 4 / 1e6, 1), "seconds_per_case": round(seconds, 2),
            "path": predictor.path.precision}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--fold", type=int, required=True)
    parser.add_argument("--epoch", type=int, required=True, help="the validated epoch every run reached")
    parser.add_argument("--folds", type=int, default=5, help="ensemble size the seconds are for")
    parser.add_argument("--slices", type=int, default=40)
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument("--out", type=Path, help="write the rows as JSON")
    args = parser.parse_args(argv)
    hu = head_ct(args.slices).astype(np.float32)
    rows = [measure(run, args.fold, args.epoch, args.folds, hu, args.precision) for run in args.runs]
    print(f"cpu: {cpu_model()}, {torch.get_num_threads()} threads; fold {args.fold}, epoch {args.epoch}; "
          f"{args.folds}-fold ensemble on a 512² × {args.slices} head")
    print("| run | filters | pixel mm | out-of-fold Dice | ensemble MB | s per case | path |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['init_filters']} | {r['spacing_mm']} | {r['val_dice']:.3f} | {r['ensemble_mb']} "
              f"| {r['seconds_per_case']} | {r['path']} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
