"""The cases of an INSTANCE-layout dataset and their deterministic k-fold split (``splits.json``).

``splits.json`` is a list with one entry per fold, ``{"train": [names], "val": [names]}`` (the
layout nnU-Net uses), so a split published by the challenge community can be dropped in as is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.io import IMAGE_SUFFIXES, CaseError, case_name


@dataclass(frozen=True)
class TrainCase:
    name: str
    image: Path
    label: Path


def find_cases(dataset: Path, subset: str = "train") -> list[TrainCase]:
    """Pairs ``DATASET/<subset>/data/NAME`` with ``DATASET/<subset>/label/NAME``, sorted by name."""
    data, labels = dataset / subset / "data", dataset / subset / "label"
    if not data.is_dir() or not labels.is_dir():
        raise CaseError(f"{dataset}: expected INSTANCE layout {subset}/data/ and {subset}/label/")
    images = {case_name(p): p for p in data.iterdir() if p.name.lower().endswith(IMAGE_SUFFIXES)}
    masks = {case_name(p): p for p in labels.iterdir() if p.name.lower().endswith(IMAGE_SUFFIXES)}
    missing = sorted(set(images) - set(masks))
    if missing:
        raise CaseError(f"{labels}: no label for case {missing[0]} ({len(missing)} case(s) without label)")
    if not images:
        raise CaseError(f"{data}: no images found (.nii.gz, .nii, .mha, .nrrd)")
    return [TrainCase(name, images[name], masks[name]) for name in sorted(images)]


def make_splits(names: list[str], folds: int = 5, seed: int = 0) -> list[dict[str, list[str]]]:
    """Shuffle the names with ``seed`` and deal them into ``folds`` validation sets of near-equal size."""
    if len(names) < folds:
        raise ValueError(f"{len(names)} case(s) cannot be split into {folds} folds")
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    val_sets = [sorted(order[k::folds]) for k in range(folds)]
    return [{"train": sorted(set(names) - set(val)), "val": val} for val in val_sets]


def write_splits(splits: list[dict[str, list[str]]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(splits, indent=1) + "\n")


def read_splits(path: Path, names: list[str]) -> list[dict[str, list[str]]]:
    """Read and check a split: every named case must exist, and no case may be in train and val of a fold."""
    try:
        splits = json.loads(path.read_text())
        folds = [{"train": [str(n) for n in f["train"]], "val": [str(n) for n in f["val"]]} for f in splits]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise CaseError(f"{path}: not a valid splits file, expected [{{'train': [...], 'val': [...]}}, ...] "
                        f"({err})") from None
    known = set(names)
    for index, fold in enumerate(folds):
        unknown = sorted(set(fold["train"] + fold["val"]) - known)
        if unknown:
            raise CaseError(f"{path}: fold {index} names case {unknown[0]} which is not in the dataset")
        if set(fold["train"]) & set(fold["val"]):
            raise CaseError(f"{path}: fold {index} has cases in both train and val")
        if not fold["val"] or not fold["train"]:
            raise CaseError(f"{path}: fold {index} has an empty train or val list")
    return folds


def load_or_make_splits(path: Path, names: list[str], folds: int, seed: int) -> list[dict[str, list[str]]]:
    """The split at ``path`` when it exists (user-supplied or from an earlier run), else a new one written there."""
    if path.is_file():
        return read_splits(path, names)
    splits = make_splits(names, folds, seed)
    write_splits(splits, path)
    return splits
