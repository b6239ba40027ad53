"""A training run: dataset → split → cached cases → one or all folds of either family.

Run folder layout (``--out RUN``)::

    RUN/config.json            family, input mode, network and inference settings (export reads it)
    RUN/splits.json            the folds' case names (given with --splits, or made with --split-seed)
    RUN/cache/                 canonical HU and label arrays per case
    RUN/fold0/                 2D: best.pt, last.pt, training_log.csv, curves.png
    RUN/fold0/training.json    the schedule this fold was last trained with (export records it per fold)
    RUN/fold0/stage1/, stage2/ 3D cascade: the same per stage
    RUN/oof_stage1/NAME.npy    3D cascade: each case's stage-1 probability from the fold that held it out

Stage 2 of fold k trains on stage-1 probabilities that come, case by case, from the stage-1 model
of the fold that held that case out, so no probability it learns from was produced by a model that
saw the case (as nnU-Net's cascade does); its validation runs the real cascade (fold k's stage 1,
then stage 2) on fold k's held-out cases.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.atomic import atomic_path
from model.compute import cpu_has_native_bf16
from model.families import build_network
from model.families import family as family_spec
from model.settings import PatchInference
from model.spacing import Spacing, parse_spacing
from model.weights import Manifest
from model.windowing import CHANNELS
from training.data import Augment, CachedCase, cache_case
from training.distributed import DistInfo, barrier
from training.families import checkpoint_path, fold_dir, training_family, training_record
from training.loop import LoopConfig, fit
from training.splits import find_cases, load_or_make_splits, read_splits, write_splits
from training.validation import dice, predict_case, probe_manifest, stage1_probability


@dataclass(frozen=True)
class RunConfig:
    """What the run trains (fixed for the run; ``config.json``); export builds the manifest from it."""

    family: str
    input_mode: str
    network: dict
    inference: dict
    crop: tuple[int, ...]
    folds: int
    dataset: str
    training: dict = field(default_factory=dict)

    def check_against(self, path: Path) -> None:
        """A run folder keeps one model: refuse to mix families, modes or networks in it."""
        if not path.is_file():
            return
        old = json.loads(path.read_text())
        for key in ("family", "input_mode", "network", "crop", "folds", "inference"):
            new = json.loads(json.dumps(asdict(self)[key]))
            if old.get(key) != new:
                raise ValueError(f"{path}: run was made with {key}={old.get(key)!r}, not {new!r}; use another --out")


def _cache_all(dataset: Path, run: Path, info: DistInfo, spacing: Spacing | None) -> dict[str, CachedCase]:
    """Every rank caches its share, then all read the (now complete) cache."""
    cases = find_cases(dataset)
    for case in cases[info.rank::info.world_size]:
        cache_case(case, run / "cache", spacing)
    barrier(info)
    return {case.name: cache_case(case, run / "cache", spacing) for case in cases}


SLAB_MM = 5.0  # a new run's slab_mm: INSTANCE's usual slice thickness and the generator's (55 % of cases)


def training_spacing(family: str, values: list[float] | None) -> list[float | None] | None:
    """``--spacing``: one value is the in-plane pixel (mm), three are (z, y, x) for the 3D cascade."""
    if not values:
        return None
    if len(values) == 1:
        return [None, values[0], values[0]]
    if len(values) == 3 and not family_spec(family).slice_wise:
        return list(values)
    raise ValueError("--spacing takes one in-plane value (mm), or three (z y x) for the 3D cascade")


def prepare(args, info: DistInfo) -> tuple[RunConfig, list[dict], dict[str, CachedCase]]:
    """Config, split and cache of the run folder (written by rank 0, read by all)."""
    run: Path = args.out
    entry = training_family(args.family)
    network = json.loads(json.dumps(entry.spec.default_network()))  # tuples as JSON lists, as config.json has them
    given = {"init_filters": args.init_filters, "blocks_down": args.blocks_down, "dsdepth": args.dsdepth,
             "norm": args.norm}
    network.update({k: v for k, v in given.items() if v is not None and k in network})
    if args.input_mode not in entry.spec.input_modes:
        raise ValueError(f"{args.family} takes the input modes {', '.join(entry.spec.input_modes)} only")
    inference: dict = {"batch_size": entry.inference_batch_size}
    if entry.spec.slice_wise:
        crop = tuple(args.crop)
    else:
        crop = tuple(args.patch)
        inference = {"roi_size": list(crop), "overlap": PatchInference.overlap, **inference}
    spacing = training_spacing(args.family, getattr(args, "spacing", None))
    if spacing is not None:
        inference["spacing_zyx"] = spacing
    if getattr(args, "slab_mm", None):
        inference["slab_mm"] = float(args.slab_mm)
    factor = tuple(int(f) for f in build_network(args.family, CHANNELS[args.input_mode], network).shape_factor())
    if len(crop) != len(factor) or any(c % f for c, f in zip(crop, factor, strict=True)):
        raise ValueError(f"crop/patch {crop} must be a multiple of the network's shape factor {factor}")
    augment = _augment(args)
    training = {"epochs": args.epochs, "steps_per_epoch": args.steps_per_epoch, "seed": args.seed,
                "split_seed": args.split_seed, "augment": not args.no_augment,
                "offset_hu": augment.offset_hu, "scanner_augment": augment.scanner,
                "balance_lesions": getattr(args, "balance_lesions", False), "loss": getattr(args, "loss", "dice_bce"),
                **{k: v for k, v in asdict(loop_config(args, args.family)).items()
                   if k in ("batch_size", "lr", "weight_decay", "optimizer", "average_from")},
                "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    config = RunConfig(args.family, args.input_mode, network, inference, crop, args.folds, str(args.data), training)
    run.mkdir(parents=True, exist_ok=True)
    config.check_against(run / "config.json")
    cases = _cache_all(args.data, run, info, parse_spacing(spacing))
    names = sorted(cases)
    if info.is_main:
        if args.splits:
            write_splits(read_splits(args.splits, names), run / "splits.json")
        load_or_make_splits(run / "splits.json", names, args.folds, args.split_seed)
        (run / "config.json").write_text(json.dumps(asdict(config), indent=1) + "\n")
    barrier(info)
    splits = read_splits(run / "splits.json", names)
    if len(splits) != args.folds:
        raise ValueError(f"{run / 'splits.json'} has {len(splits)} folds but --folds is {args.folds}")
    return config, splits, cases


def loop_config(args, family: str) -> LoopConfig:
    entry = training_family(family)
    return LoopConfig(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                      batch_size=args.batch_size or entry.batch_size, lr=args.lr or entry.lr,
                      weight_decay=entry.weight_decay if args.weight_decay is None else args.weight_decay,
                      optimizer=entry.optimizer, workers=args.workers, seed=args.seed, resume=args.resume,
                      validate_every=args.validate_every, average_from=getattr(args, "average_from", 0),
                      bf16=args.device != "cuda" and not getattr(args, "fp32", False) and cpu_has_native_bf16())


def fold_loop(args, family: str, fold: int, stage: str = "") -> LoopConfig:
    """The loop settings of one fold (or stage): with ``--init-from RUN``, warm-started from that run's
    checkpoint of the same fold and stage (same split)."""
    loop = loop_config(args, family)
    init = getattr(args, "init_from", None)
    return replace(loop, init_from=checkpoint_path(init, fold, stage)) if init is not None else loop


def _network(config: RunConfig, seed: int) -> nn.Module:
    torch.manual_seed(seed)  # every rank builds the same initial weights
    return build_network(config.family, CHANNELS[config.input_mode], config.network)


def _manifest(config: RunConfig) -> Manifest:
    return probe_manifest(config.family, config.input_mode, config.network, config.inference)


def _load_stage1(stage1: nn.Module, run: Path, fold: int) -> nn.Module:
    """``stage1`` with fold ``fold``'s best stage-1 weights."""
    state = torch.load(checkpoint_path(run, fold, "stage1"), map_location="cpu", weights_only=True)["model"]
    stage1.load_state_dict(state)
    return stage1


def _loss(args) -> nn.Module:
    """The family's loss of the run's ``--loss`` (the seeds' Dice + BCE when not given)."""
    return training_family(args.family).loss(getattr(args, "loss", "dice_bce"))


def _augment(args) -> Augment:
    """The run's augmentation: MONAI's defaults of :class:`Augment`, or none, and the HU offset asked for."""
    return Augment(enabled=not args.no_augment, offset_hu=0.0 if args.no_augment else getattr(args, "offset_hu", 0.0),
                   scanner=getattr(args, "scanner_augment", False))


def train_fold_2d(args, config: RunConfig, split: dict, cases: dict[str, CachedCase], fold: int,
                  info: DistInfo) -> dict:
    entry = training_family(config.family)
    loop = fold_loop(args, config.family, fold)
    model = _network(config, args.seed + fold)
    dataset = entry.dataset([cases[n] for n in split["train"]], config.input_mode, config.crop,
                            loop.steps_per_epoch * loop.batch_size, seed=args.seed + fold,
                            augment=_augment(args),
                            balance_lesions=getattr(args, "balance_lesions", False))
    manifest = _manifest(config)

    def val_dice(module: nn.Module, case: CachedCase) -> float:
        return dice(predict_case(module, manifest, case, info.device) >= 0.5, case.label())

    return fit(model, dataset, _loss(args), [cases[n] for n in split["val"]], val_dice,
               fold_dir(args.out, fold), loop, info, desc=f"fold {fold}")


def stage1_oof(args, config: RunConfig, splits: list[dict], cases: dict[str, CachedCase],
               info: DistInfo) -> dict[str, Path]:
    """Out-of-fold stage-1 probability of every case (each from the fold that held it out), cached."""
    out = args.out / "oof_stage1"
    out.mkdir(parents=True, exist_ok=True)
    holder = {name: fold for fold, split in enumerate(splits) for name in split["val"]}
    missing = [f for f in sorted(set(holder.values())) if not checkpoint_path(args.out, f, "stage1").is_file()]
    if missing:
        raise FileNotFoundError(f"{checkpoint_path(args.out, missing[0], 'stage1')}: stage 2 needs stage 1 of every "
                                "fold first (out-of-fold probabilities); run --stage 1 --fold all")
    stages: dict[int, nn.Module] = {}
    inf = _manifest(config).inference
    assert isinstance(inf, PatchInference)  # the cascade's
    for name in sorted(holder)[info.rank::info.world_size]:
        path = out / f"{name}.npy"
        if path.is_file():
            continue
        fold = holder[name]
        if fold not in stages:
            stages[fold] = _load_stage1(_network(config, 0).stage1, args.out, fold).to(info.device).eval()
        prob = stage1_probability(stages[fold], np.asarray(cases[name].hu(), dtype=np.float32),
                                  inf.roi_size, inf.overlap, inf.batch_size, info.device)
        with atomic_path(path, ".npy") as tmp:
            np.save(tmp, prob.astype(np.float16))
    barrier(info)
    return {name: out / f"{name}.npy" for name in holder}


def train_fold_3d(args, config: RunConfig, splits: list[dict], cases: dict[str, CachedCase], fold: int,
                  info: DistInfo) -> dict:
    entry = training_family(config.family)
    stage = entry.stages[args.stage - 1]
    loop = fold_loop(args, config.family, fold, stage)
    split = splits[fold]
    train_cases, val_cases = [cases[n] for n in split["train"]], [cases[n] for n in split["val"]]
    cascade = _network(config, args.seed + fold)
    manifest = _manifest(config)
    inf = manifest.inference
    assert isinstance(inf, PatchInference)  # the cascade's
    if args.stage == 1:
        dataset = entry.dataset(train_cases, config.crop, loop.steps_per_epoch * loop.batch_size,
                                seed=args.seed + fold, augment=_augment(args))

        def val_dice(module: nn.Module, case: CachedCase) -> float:
            prob = stage1_probability(module, np.asarray(case.hu(), dtype=np.float32), inf.roi_size,
                                      inf.overlap, inf.batch_size, info.device)
            return dice(prob >= 0.5, case.label())

        return fit(cascade.stage1, dataset, _loss(args), val_cases, val_dice,
                   fold_dir(args.out, fold, stage), loop, info, desc=f"fold {fold} stage 1")

    probs = stage1_oof(args, config, splits, cases, info)
    _load_stage1(cascade.stage1, args.out, fold).to(info.device).requires_grad_(False)
    dataset = entry.dataset(train_cases, config.crop, loop.steps_per_epoch * loop.batch_size, seed=args.seed + fold,
                            augment=_augment(args),
                            stage1_probs={c.name: probs[c.name] for c in train_cases})

    def cascade_dice(module: nn.Module, case: CachedCase) -> float:
        cascade.stage2 = module  # the stage being trained, behind this fold's fixed stage 1
        return dice(predict_case(cascade.eval(), manifest, case, info.device) >= 0.5, case.label())

    return fit(cascade.stage2, dataset, _loss(args), val_cases, cascade_dice,
               fold_dir(args.out, fold, stage), loop, info, desc=f"fold {fold} stage 2")


def run_training(args, info: DistInfo) -> list[dict]:
    """Train the folds asked for; returns each fold's ``{"epoch", "best_dice"}``."""
    config, splits, cases = prepare(args, info)
    folds = range(config.folds) if args.fold == "all" else [int(args.fold)]
    results = []
    for fold in folds:
        if not 0 <= fold < config.folds:
            raise ValueError(f"--fold {fold} is outside 0..{config.folds - 1}")
        if info.is_main:  # config.json holds the last invocation's schedule; folds may each have their own
            record = training_record(args.out, fold)
            record.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(record) as tmp:
                tmp.write_text(json.dumps(config.training, indent=1) + "\n")
        if family_spec(config.family).slice_wise:
            results.append(train_fold_2d(args, config, splits[fold], cases, fold, info))
        else:
            results.append(train_fold_3d(args, config, splits, cases, fold, info))
    return results
