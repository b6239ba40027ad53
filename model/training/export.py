"""Fold checkpoints of a run → a ``weights/`` folder (fold files, manifest with SHA-256) that process.py reads.

Optionally the post-processing's smallest kept component is chosen on the run's own out-of-fold
predictions: every fold's model predicts the cases it never trained on, and the candidate volume
with the highest mean Dice (ties: the smallest) goes into the manifest.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.networks import build_network
from model.postprocess import PostprocessConfig, postprocess
from model.training.data import cache_case
from model.training.splits import find_cases, read_splits
from model.training.validation import dice, predict_case, probe_manifest
from model.weights import Manifest, write_weights
from model.windowing import CHANNELS

MIN_COMPONENT_CANDIDATES = (0.0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)  # mL


def _load(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint missing; train this fold first")
    return torch.load(path, map_location="cpu", weights_only=True)


def fold_states(run: Path, config: dict, checkpoint: str = "best") -> list[dict[str, torch.Tensor]]:
    """One state dict per fold in the manifest's network layout (the cascade's two stages joined)."""
    states = []
    for fold in range(config["folds"]):
        if config["family"] == "segresnet2d":
            states.append(_load(run / f"fold{fold}/{checkpoint}.pt")["model"])
        else:
            states.append({f"{stage}.{key}": value for stage in ("stage1", "stage2")
                           for key, value in _load(run / f"fold{fold}/{stage}/{checkpoint}.pt")["model"].items()})
    return states


def _model(config: dict, state: dict, device: torch.device) -> nn.Module:
    model = build_network(config["family"], CHANNELS[config["input_mode"]], config["network"])
    model.load_state_dict(state)
    return model.to(device).eval()


def tune_min_component(run: Path, config: dict, states: list[dict], threshold: float, device: torch.device,
                       candidates: tuple[float, ...] = MIN_COMPONENT_CANDIDATES) -> tuple[float, dict[str, float]]:
    """Out-of-fold mean Dice (never-empty on) for each candidate ``min_component_ml``; returns the best."""
    cases = {c.name: cache_case(c, run / "cache") for c in find_cases(Path(config["dataset"]))}
    splits = read_splits(run / "splits.json", sorted(cases))
    manifest = probe_manifest(config["family"], config["input_mode"], config["network"], config["inference"])
    scores: dict[float, list[float]] = {c: [] for c in candidates}
    for fold, split in enumerate(splits):
        model = _model(config, states[fold], device)
        for name in split["val"]:
            case = cases[name]
            label = np.asarray(case.label())
            if not label.any():
                continue
            prob = predict_case(model, manifest, case, device)
            for candidate in candidates:
                mask = postprocess(prob, case.spacing_zyx, threshold, PostprocessConfig(candidate, True))
                scores[candidate].append(dice(mask, label))
    table = {str(c): round(float(np.mean(s)), 4) for c, s in scores.items() if s}
    if not table:
        raise ValueError(f"{run}: no held-out case with haemorrhage to choose min_component_ml on; pass it")
    best = max(candidates, key=lambda c: (table[str(c)], -c))
    return best, table


def export_run(run: Path, weights_dir: Path, checkpoint: str = "best", threshold: float = 0.5,
               min_component_ml: float | None = None, never_empty: bool = True, description: dict | None = None,
               device: torch.device | None = None) -> Manifest:
    """Write ``weights_dir`` from the run's folds; ``min_component_ml=None`` chooses it out-of-fold."""
    config_path = run / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: not a training run folder (no config.json)")
    config = json.loads(config_path.read_text())
    states = fold_states(run, config, checkpoint)
    tuning = None
    if min_component_ml is None:
        min_component_ml, tuning = tune_min_component(run, config, states, threshold, device or torch.device("cpu"))
        (run / "postprocess_tuning.json").write_text(json.dumps(
            {"out_of_fold_mean_dice_by_min_component_ml": tuning, "chosen": min_component_ml}, indent=1) + "\n")
    scores = []
    for fold in range(config["folds"]):
        folder = run / f"fold{fold}" / ("stage2" if config["family"] == "cascade3d" else "")
        value = float(_load(folder / f"{checkpoint}.pt").get("val_dice", math.nan))
        scores.append(None if math.isnan(value) else round(value, 4))
    info = {"trained_on": config["dataset"], "training": config.get("training", {}), "checkpoint": checkpoint,
            "fold_val_dice": scores, "exported": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if tuning:
        info["min_component_ml_oof_dice"] = tuning
    manifest = {"family": config["family"], "input_mode": config["input_mode"], "network": config["network"],
                "threshold": threshold, "inference": config["inference"],
                "postprocess": {"min_component_ml": float(min_component_ml), "never_empty": never_empty},
                "description": {**info, **(description or {})}}
    return write_weights(weights_dir, manifest, states)
