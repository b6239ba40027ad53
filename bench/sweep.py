"""Network family, width and training pixel size, chosen by measurement: out-of-fold Dice against
training time and seconds per case.

    python3 bench/sweep.py RUN [RUN ...] --fold 3 --epoch 4 [--folds 5] [--slices 40] [--precision auto]

Every RUN is one configuration trained on the same split (``train.py fit``, differing in
``--family``, ``--init-filters`` or ``--spacing``). For each it prints the fold's validation Dice at
``--epoch`` from its ``training_log.csv`` (the out-of-fold Dice training reports: threshold 0.5, no
post-processing; the 3D cascade's log of its last trained stage), the training wall-clock hours up to
that epoch (validation included), the size of an ensemble of ``--folds`` such networks, and the
seconds that ensemble takes on a generated 512² × ``--slices`` head (:mod:`bench.case`, 0.45 mm
pixels, so the predictor resamples it to the run's spacing exactly as it would a real case) on the
compute path this CPU takes (:mod:`model.compute`). Timing uses the fold's own checkpoints repeated
``--folds`` times: the work per fold does not depend on the weights' values, so a cascade whose
stage 2 is not trained yet is timed whole, its stage 2 as initialised (the row says so).

A speed result holds for the CPU it was measured on, so the CPU model is printed with the table.
"""

from __future__ import annotations

import argparse
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
from training.families import checkpoint_path, fold_dir, training_family
from training.loop import read_log
from training.validation import probe_manifest


def trained_stages(run: Path, fold: int, family: str) -> list[str]:
    """The family's checkpoint stages this fold has a last checkpoint for, in order."""
    return [stage for stage in training_family(family).stages if checkpoint_path(run, fold, stage, "last").is_file()]


def logged(run: Path, fold: int, stage: str, epoch: int) -> tuple[float, float]:
    """The validation Dice logged for ``epoch`` (NaN when that epoch was not validated or not reached)
    and the training hours up to it."""
    path = fold_dir(run, fold, stage) / "training_log.csv"
    if not path.is_file():
        raise SystemExit(f"{path}: no training log")
    rows = read_log(path, epoch)
    hours = sum(float(row["seconds"]) for row in rows) / 3600
    reached = rows and int(rows[-1]["epoch"]) == epoch
    return (float(rows[-1]["val_dice"]) if reached else float("nan")), hours


def measure(run: Path, fold: int, epoch: int, folds: int, hu: np.ndarray, precision: str) -> dict:
    """One configuration's row: its Dice at ``epoch``, training hours, ensemble size and seconds per case."""
    config = json.loads((run / "config.json").read_text())
    manifest = probe_manifest(config["family"], config["input_mode"], config["network"], config["inference"])
    stages = trained_stages(run, fold, config["family"])
    if not stages:
        raise SystemExit(f"{run}: fold {fold} has no last checkpoint")
    model = build_model(manifest).eval()
    for stage in stages:
        state = torch.load(checkpoint_path(run, fold, stage, "last"), map_location="cpu", weights_only=True)["model"]
        (getattr(model, stage) if stage else model).load_state_dict(state)
    dice, hours = logged(run, fold, stages[-1], epoch)
    device = torch.device("cpu")
    predictor = EnsemblePredictor([model] * folds, manifest, device, path=choose_path(device, precision, "auto"))
    spacing_zyx = tuple(float(s) for s in SPACING_XYZ[::-1])
    predictor.predict(hu[:4], spacing_zyx)  # warm-up: oneDNN picks its kernels on the first call
    start = time.perf_counter()
    predictor.predict(hu, spacing_zyx)
    seconds = time.perf_counter() - start
    parameters = sum(p.numel() for p in model.parameters())
    untrained = [stage for stage in training_family(config["family"]).stages if stage not in stages]
    return {"run": run.name, "family": config["family"], "init_filters": config["network"]["init_filters"],
            "spacing_mm": config["inference"]["spacing_zyx"][-1], "val_dice": dice, "train_hours": round(hours, 3),
            "ensemble_mb": round(folds * parameters * 4 / 1e6, 1), "seconds_per_case": round(seconds, 2),
            "path": predictor.path.precision, "timed_untrained": untrained}


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
    print("| run | family | filters | pixel mm | out-of-fold Dice | training h | ensemble MB | s per case | path |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        untrained = f" ({', '.join(r['timed_untrained'])} untrained)" if r["timed_untrained"] else ""
        print(f"| {r['run']} | {r['family']} | {r['init_filters']} | {r['spacing_mm']} | {r['val_dice']:.3f} "
              f"| {r['train_hours']:.2f} | {r['ensemble_mb']} | {r['seconds_per_case']}{untrained} | {r['path']} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
