"""Fold checkpoints of a run → a ``weights/`` folder (fold files, manifest with SHA-256) that process.py reads.

Settings not given are chosen on the run's own out-of-fold predictions (every fold's model predicts
the cases it never trained on): the 2D crop margin, the smallest that reproduces whole-slice
inference; the post-processing (threshold, smallest kept component, the peak probability that keeps
a smaller one, the peak a component needs at all, the intracranial share), the combination with the
highest mean Dice over all held-out cases (a case without blood scores 1 when its mask is empty or
only the never-empty fallback, else 0; ties: the smallest), then at those settings the smallest
component of a one-slice input, on the same cases' slices; and, on a CPU with native bf16 (or
anywhere with ``measure_bf16``), whether the CPU may compute in bf16: only when bf16 masks match
fp32 masks (pooled Dice ≥ 0.99, total volume within 1 %); with ``measure_fp16``, under the same rule,
whether CUDA may compute in fp16 autocast (``cuda_precision``; not measured: fp32 on CUDA).

Without native bf16 autocast still computes in bf16, emulated: operands rounded to bf16, products
accumulated in fp32, outputs rounded to bf16, the rounding points of oneDNN's AMX path; only 10–15×
slower. So ``measure_bf16`` lets an export made on such a CPU decide for the CPUs that have it, rather
than writing fp32 for want of a measurement. fp16 on the CPU is emulated the same way (operands
rounded to fp16, fp32 accumulation, as cuDNN's tensor cores do), so a CPU export decides for CUDA;
`scripts/compare_devices.py` checks the real cuDNN fp16 masks on a GPU.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from model.anatomy import blood_space, on_bone_below, skull_hull
from model.calibration import brain_level
from model.compute import ComputePath, choose_path, cpu_flags, cpu_has_native_bf16, cpu_model
from model.families import family
from model.io import LoadedCase, read_image
from model.postprocess import (
    CONNECTIVITY,
    FLOOR_SHARE,
    PostprocessConfig,
    components_kept,
    fallback_region,
    remove_extracranial,
    remove_on_floor,
)
from model.predictor import EnsemblePredictor
from model.spacing import parse_spacing, voxel_ml
from model.weights import Manifest, build_model, load_manifest, read_fold, write_weights
from training.data import CachedCase, cache_case
from training.families import checkpoint_path, training_family, training_record
from training.splits import find_cases, read_splits
from training.validation import predict_case, probe_manifest

MIN_COMPONENT_CANDIDATES = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)  # mL: real bleeds under 1 mL must survive
KEEP_PEAK_CANDIDATES = (1.0, 0.99, 0.97, 0.95, 0.9)  # small components this sure stay (1.0: off)
MIN_PEAK_CANDIDATES = (0.0, 0.7, 0.8, 0.9, 0.95)  # components less sure than this go (0: off)
SHARE_CANDIDATES = (0.0, 0.5)  # intracranial_share: off, or components mostly inside the skull
THRESHOLD_CANDIDATES = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # of the mean fold probability
CROP_MARGIN_CANDIDATES = (0, 8, 16, 32, 64)  # pixels
WHOLE_SLICE = 1 << 16  # a crop margin wider than any slice: the crop is the whole slice
MARGIN_AGREEMENT = 0.999  # pooled Dice against whole-slice masks that a margin must reach
TUNING_TABLES = ("tuned_on", "oof_score", "crop_margin_agreement", "min_component_ml_oof_dice", "keep_peak_oof_dice",
                 "min_peak_oof_dice",
                 "intracranial_share_oof_dice", "threshold_oof_dice", "single_slice_oof_dice",
                 "single_slice_oof_slices", "bf16_agreement", "fp16_agreement")  # kept in the manifest
BF16_DICE, BF16_VOLUME = 0.99, 0.01  # bf16 masks against fp32 masks: pooled Dice at least, volume within
RECHECK_MARGINS = (0.05, 0.1, 0.2, 0.3)  # 2D: bf16 probabilities this near the threshold are computed again in fp32
SLICE_BLOOD_PIXELS = 10  # a held-out slice with this much blood is a positive one-slice input
IN_SLICE = np.array([np.zeros((3, 3)), np.ones((3, 3)), np.zeros((3, 3))], dtype=bool)  # 8-connected, one slice
BF16_CASES = 12  # held-out cases the bf16 check predicts twice (each new crop shape costs oneDNN a set-up)


def _load(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint missing; train this fold first")
    return torch.load(path, map_location="cpu", weights_only=True)


def fold_states(run: Path, config: dict, checkpoint: str = "best",
                folds: list[int] | None = None) -> dict[int, dict[str, torch.Tensor]]:
    """The state dict of each fold (default: all) in the manifest's network layout (the cascade's two
    stages joined)."""
    states = {}
    stages = training_family(config["family"]).stages
    for fold in range(config["folds"]) if folds is None else folds:
        if not 0 <= fold < config["folds"]:
            raise ValueError(f"fold {fold} is outside 0..{config['folds'] - 1}")
        states[fold] = {f"{stage}.{key}" if stage else key: value for stage in stages
                        for key, value in _load(checkpoint_path(run, fold, stage, checkpoint))["model"].items()}
    return states


def _model(config: dict, state: dict, device: torch.device) -> nn.Module:
    manifest = probe_manifest(config["family"], config["input_mode"], config["network"], config["inference"])
    return build_model(manifest, state).to(device).eval()


def _held_out(run: Path, config: dict, states: dict[int, dict],
              device: torch.device) -> Iterator[tuple[CachedCase, list[nn.Module]]]:
    """Every case held out by the exported folds, with the model of the fold that never trained on it."""
    spacing = parse_spacing(config["inference"].get("spacing_zyx"))
    cases = {c.name: cache_case(c, run / "cache", spacing) for c in find_cases(Path(config["dataset"]))}
    for fold, split in enumerate(read_splits(run / "splits.json", sorted(cases))):
        if fold not in states:
            continue
        model = _model(config, states[fold], device)
        for name in split["val"]:
            yield cases[name], [model]


BRAIN_HU_PERCENTILES = (2.5, 75.0)  # down to where most training heads are, up only to nearly all of them


def trained_brain_hu(run: Path, config: dict, folds: list[int]) -> list[float] | None:
    """The brain levels (:func:`model.calibration.brain_level`) the ``folds`` trained on, for the
    manifest's ``inference.brain_hu``: the 2.5th to the 75th percentile of their training cases, in HU,
    rounded to 0.1 (the shipped folds' 300 heads: 20.0-29.0). Asymmetric, by measurement on held-out
    heads: a brain brighter than most training heads is where the folds paint normal heads (moved by
    +10 HU, a top at the 97.5th percentile, 33.8 HU, still let them paint 21 mL, the 75th 0.34 mL),
    while lifting a darker brain that many training heads share (20-24 HU) painted 8.8 mL on a 4 mm
    normal head. None when no case shows enough brain."""
    cases = {c.name: c for c in find_cases(Path(config["dataset"]))}
    splits = read_splits(run / "splits.json", sorted(cases))
    names = sorted({name for fold in folds for name in splits[fold]["train"]})
    levels = []
    for name in names:
        image = cases[name].image  # read as process.py reads a case: the level the predictor will measure
        loaded = LoadedCase.of(read_image(image), image)
        level = brain_level(loaded.hu, loaded.spacing_zyx)
        if level is not None:
            levels.append(level)
    if not levels:
        return None
    return [round(float(v), 1) for v in np.percentile(levels, BRAIN_HU_PERCENTILES)]


def _tuning_set(folder: Path, cache: Path, config: dict, states: dict[int, dict],
                device: torch.device) -> Iterator[tuple[CachedCase, list[nn.Module]]]:
    """Every labelled case of ``folder`` (INSTANCE layout, ``train/``), with every exported fold: the
    ensemble predicts them as the container will. Out of fold, each case sees one fold's model, whose
    probability is near 0 or 1 wherever that model is sure; the ensemble's mean tells a finding all
    folds agree on (1.0) from one that two of three make (0.67), which the peak rules can use."""
    spacing = parse_spacing(config["inference"].get("spacing_zyx"))
    models = [_model(config, state, device) for state in states.values()]
    for case in find_cases(folder):
        yield cache_case(case, cache, spacing), models


def _component_scores(prob: np.ndarray, mask: np.ndarray, label: np.ndarray, spacing_zyx: tuple[float, ...],
                      fallback: np.ndarray, candidates: list[tuple[float, float, float]]) -> list[float]:
    """The score of each ``(min_component_ml, keep_peak, min_peak)`` on one case, from one labelling of ``mask``.

    Equal to running :func:`postprocess` (never-empty on) for every candidate and scoring its mask, without
    labelling the mask again each time: Dice against ``label`` on a case with blood; on a case without,
    1 when the mask is empty or only the ≤ 0.1 mL fallback (what the product reports as no finding).
    """
    labels, count = ndimage.label(mask, structure=CONNECTIVITY)
    index = np.arange(1, count + 1)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    peaks = np.asarray(ndimage.maximum(prob, labels, index)) if count else None
    hits = np.bincount(labels[label > 0], minlength=count + 1)[1:]
    truth = int(label.sum())
    fallback_hits, fallback_size = int((fallback & (label > 0)).sum()), int(fallback.sum())
    scores = []
    for ml, peak, min_peak in candidates:
        kept = components_kept(sizes, peaks, ml / voxel_ml(spacing_zyx), peak, min_peak)
        if not kept.any():
            both, size, empty = fallback_hits, fallback_size, True
        else:
            both, size, empty = int(hits[kept].sum()), int(sizes[kept].sum()), False
        scores.append(2 * both / (size + truth) if truth else float(empty))
    return scores


def _slice_fallbacks(prob: np.ndarray, label: np.ndarray, spacing_zyx: tuple[float, ...],
                     inside: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per slice, the never-empty fallback of that slice alone: its blood voxels and its size."""
    hits, size = np.zeros(len(label)), np.zeros(len(label))
    for z in range(len(label)):
        region = fallback_region(prob[z:z + 1], spacing_zyx, PostprocessConfig().fallback_max_ml,
                                 None if inside is None else inside[z:z + 1])
        hits[z], size[z] = (region & (label[z:z + 1] > 0)).sum(), region.sum()
    return hits, size


def _single_slice_scores(prob: np.ndarray, mask: np.ndarray, label: np.ndarray, spacing_zyx: tuple[float, ...],
                         intracranial: np.ndarray, fallbacks: tuple[np.ndarray, np.ndarray],
                         candidates: list[tuple[float, float, float]]) -> dict[tuple, tuple[list[float], list[float]]]:
    """Each slice of a held-out case scored as a one-slice input, for each ``(min_component_ml, keep_peak,
    min_peak)`` (the volume's candidates, so the keep_peak chosen for volumes, which one-slice inputs
    also take, is the one scored):
    Dice on slices with at least ``SLICE_BLOOD_PIXELS`` of blood, and on ``intracranial`` slices (the
    filter's space is not empty there) without blood 1 for a mask that is empty or only the
    fallback (``fallbacks``: :func:`_slice_fallbacks`); ``(positives, negatives)`` per candidate.

    The 2D network predicts each slice alone, so a slice of the volume's probability is what that
    slice alone gives (up to the crop margin's agreement); only the components (within the slice)
    and the fallback (per slice) differ from the volume's post-processing.
    """
    truth = label.reshape(len(label), -1).sum(axis=1)
    positive = np.flatnonzero(truth >= SLICE_BLOOD_PIXELS)
    negative = np.flatnonzero((truth == 0) & intracranial)
    labels, count = ndimage.label(mask, structure=IN_SLICE)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    hits = np.bincount(labels[label > 0], minlength=count + 1)[1:]
    peaks = np.asarray(ndimage.maximum(prob, labels, np.arange(1, count + 1))) if count else None
    slice_of = np.array([box[0].start for box in ndimage.find_objects(labels)], dtype=int)
    fallback_hits, fallback_size = fallbacks
    scores = {}
    for ml, keep_peak, min_peak in candidates:
        kept = components_kept(sizes, peaks, ml / voxel_ml(spacing_zyx), keep_peak, min_peak)
        both = np.bincount(slice_of[kept], weights=hits[kept], minlength=len(label))
        size = np.bincount(slice_of[kept], weights=sizes[kept], minlength=len(label))
        empty = size == 0
        both, size = np.where(empty, fallback_hits, both), np.where(empty, fallback_size, size)
        scores[ml, keep_peak, min_peak] = ([float(2 * both[z] / (size[z] + truth[z])) for z in positive],
                                           [float(empty[z]) for z in negative])
    return scores


def tune_out_of_fold(cases: Iterable[tuple[CachedCase, list[nn.Module]]], config: dict, threshold: float | None,
                     device: torch.device, margins: tuple[int, ...] = CROP_MARGIN_CANDIDATES,
                     tuned_on: str = "out of fold", intracranial_share: float | None = None,
                     max_floor_share: float = 1.0) -> dict:
    """Choose the 2D crop margin and the post-processing on out-of-fold predictions.

    The margin is the smallest of ``margins`` whose masks (threshold only) agree with whole-slice
    inference over all held-out cases with pooled Dice ≥ ``MARGIN_AGREEMENT``, else the whole slice:
    how far the crop's border reaches into the result depends on the trained network (docs/speed.md).
    The threshold and ``intracranial_share`` (each unless given), ``min_component_ml`` and ``keep_peak`` are then
    the combination with the best mean score (never-empty on) at that margin over all held-out cases:
    Dice on those with haemorrhage; on those without, 1 for a mask that is empty or only the fallback
    (ties: the smallest of each, but the intracranial filter on: blood is inside the skull, and a
    generated tuning set seldom shows the scalp and face a model paints on real scans, so a tie there
    says nothing against it). The 3D cascade crops to the head, no margin.

    ``cases``: each labelled case with the models that predict it: out of fold (:func:`_held_out`), or
    the exported folds' ensemble on a set kept apart for this, neither trained on nor the test set
    (:func:`_tuning_set`); ``tuned_on`` says which, in the result. ``max_floor_share`` is not chosen
    but applied as given, as post-processing will, to the volumes (a one-slice input has no floor).
    """
    one_slice = family(config["family"]).slice_wise
    compare = one_slice and len(margins) > 1
    runs = (*margins, WHOLE_SLICE) if compare else margins[:1]
    overlap = {m: [0, 0] for m in margins}  # pooled |a ∧ b| and |a| + |b| against the whole slice's mask
    thresholds = THRESHOLD_CANDIDATES if threshold is None else (threshold,)
    shares = SHARE_CANDIDATES if intracranial_share is None else (intracranial_share,)
    small = [(ml, peak, low) for ml in MIN_COMPONENT_CANDIDATES for peak in KEEP_PEAK_CANDIDATES
             for low in MIN_PEAK_CANDIDATES if ml or peak >= 1.0]
    combos = [(t, share, *rule) for t in thresholds for share in shares for rule in small]
    scores: dict[int, dict[tuple, list[float]]] = {m: {c: [] for c in combos} for m in runs}
    slice_scores: dict[int, dict[tuple, tuple[list[float], list[float]]]] = \
        {m: {c: ([], []) for c in combos} for m in runs}
    for case, models in cases:
        label = np.asarray(case.label())
        hu = np.asarray(case.hu(), dtype=np.float32)
        hull = skull_hull(hu)  # a one-slice input's space: no cavity to follow
        inside = blood_space(hu, case.spacing_zyx, hull)
        floor = on_bone_below(hu, case.spacing_zyx[0]) if max_floor_share < 1.0 else None
        intracranial = hull.reshape(len(hull), -1).any(axis=1)
        probs = {}
        for margin in runs:
            inference = {**config["inference"], "crop_margin": margin}
            manifest = probe_manifest(config["family"], config["input_mode"], config["network"], inference)
            prob = probs[margin] = predict_case(models, manifest, case, device)
            cap = PostprocessConfig().fallback_max_ml
            fallbacks = {on: fallback_region(prob, case.spacing_zyx, cap, inside if on else None)
                         for on in (False, True)}  # the filter on or off, as postprocess does
            slice_fallbacks = {on: _slice_fallbacks(prob, label, case.spacing_zyx, hull if on else None)
                               for on in (False, True)} if one_slice else {}
            for t in thresholds:
                above = prob >= t
                for share in shares:
                    mask = remove_extracranial(above, inside, share) if share > 0 else above
                    volume_mask = mask if floor is None else remove_on_floor(mask, floor, max_floor_share)
                    values = _component_scores(prob, volume_mask, label, case.spacing_zyx, fallbacks[share > 0],
                                               small)
                    for rule, value in zip(small, values, strict=True):
                        scores[margin][t, share, *rule].append(value)
                    if one_slice:
                        slice_mask = remove_extracranial(above, hull, share) if share > 0 else above
                        by_rule = _single_slice_scores(prob, slice_mask, label, case.spacing_zyx, intracranial,
                                                       slice_fallbacks[share > 0], small)
                        for rule, (positives, negatives) in by_rule.items():
                            slice_scores[margin][t, share, *rule][0].extend(positives)
                            slice_scores[margin][t, share, *rule][1].extend(negatives)
        if compare:
            reference = probs[WHOLE_SLICE] > thresholds[0]
            for margin in margins:
                mask = probs[margin] > thresholds[0]
                overlap[margin][0] += int((mask & reference).sum())
                overlap[margin][1] += int(mask.sum() + reference.sum())
    agreement = {str(m): round(2 * both / total if total else 1.0, 5) for m, (both, total) in overlap.items()}
    chosen = next((m for m in margins if agreement[str(m)] >= MARGIN_AGREEMENT), WHOLE_SLICE) if compare \
        else margins[0]
    means = {combo: float(np.mean(v)) for combo, v in scores[chosen].items() if v}
    if not means:
        raise ValueError(f"{tuned_on}: no labelled case to choose min_component_ml on; pass it")
    t, share, best, peak, low = max(combos, key=lambda c: (round(means[c], 6), -c[0], c[1], -c[2], c[3], -c[4]))

    def best_of(match) -> float:
        return round(max(v for c, v in means.items() if match(c)), 4)

    single = _single_slice_choice(slice_scores[chosen], t, share, peak, low) if one_slice else {}
    return {**single, "tuned_on": tuned_on,
            "crop_margin": chosen, "crop_margin_agreement": agreement if compare else None,
            "threshold": t, "min_component_ml": best, "intracranial_share": share, "keep_peak": peak,
            "min_peak": low, "oof_score": round(means[t, share, best, peak, low], 4),
            "min_component_ml_oof_dice": {str(ml): best_of(lambda c, ml=ml: c[:3] == (t, share, ml))
                                          for ml in MIN_COMPONENT_CANDIDATES},
            "keep_peak_oof_dice": {str(p): best_of(lambda c, p=p: c[:3] == (t, share, best) and c[3] == p)
                                   for p in KEEP_PEAK_CANDIDATES if best or p >= 1.0},
            "min_peak_oof_dice": {str(x): best_of(lambda c, x=x: c[:4] == (t, share, best, peak) and c[4] == x)
                                  for x in MIN_PEAK_CANDIDATES},
            "intracranial_share_oof_dice": {str(s): best_of(lambda c, s=s: c[1] == s) for s in shares},
            "threshold_oof_dice": {str(x): best_of(lambda c, x=x: c[0] == x) for x in thresholds}}


def _agreement(fp32: list[np.ndarray], reduced: list[np.ndarray]) -> dict:
    """Pooled Dice and total volume change of ``reduced`` masks against ``fp32`` masks, and the rule."""
    both = sum(int((a & b).sum()) for a, b in zip(fp32, reduced, strict=True))
    volumes = [sum(int(m.sum()) for m in masks) for masks in (fp32, reduced)]
    pooled = 2 * both / sum(volumes) if sum(volumes) else 1.0
    change = abs(volumes[1] - volumes[0]) / volumes[0] if volumes[0] else float(volumes[1] > 0)
    return {"dice": round(pooled, 5), "volume_change": round(change, 5),
            "allowed": pooled >= BF16_DICE and change <= BF16_VOLUME}


def _reduced_path(precision: str) -> ComputePath:
    """The CPU path that computes as ``precision`` does where it is native: bf16 as on AMX (native or
    emulated here), fp16 as CUDA's autocast (emulated: fp16 operands, fp32 accumulation)."""
    if precision == "fp16":
        return ComputePath("cpu", "fp16", False, cpu_model(), "CUDA's fp16 autocast, emulated on the CPU")
    return choose_path(torch.device("cpu"), "auto", "auto", flags=cpu_flags() | {"avx512_bf16"})


def precision_agreement(cases: Iterable[tuple[CachedCase, list[nn.Module]]], config: dict, threshold: float,
                        inference: dict, precisions: tuple[str, ...] = ("bf16",),
                        count: int = BF16_CASES) -> dict[str, dict]:
    """Per reduced precision (``"bf16"``: the CPU's, ``"fp16"``: CUDA's), its masks against fp32 masks
    (threshold only) on the first ``count`` of ``cases``, computed on this CPU (emulated where not
    native): plain, then (2D) with each of :data:`RECHECK_MARGINS` in turn until one meets the rule.
    ``recheck_margin`` is the margin chosen (0: plain met it; None: none did, so fp32), and each
    margin's ``rechecked`` the share of predicted slices it computed again in fp32. Where this CPU gets
    a convolution wrong in bf16 (:mod:`model.bf16_check`) bf16 is not measured but refused, with the reason:
    its predictor would compute fp32 and agree."""
    cpu = torch.device("cpu")

    def predictor(models: list[nn.Module], path: ComputePath, margin: float = 0.0) -> EnsemblePredictor:
        manifest = probe_manifest(config["family"], config["input_mode"], config["network"],
                                  {**inference, "recheck_margin": margin})
        return EnsemblePredictor(models, manifest, cpu, path=path)

    held_out = [(np.asarray(case.hu(), dtype=np.float32), models)
                for case, models in itertools.islice(cases, count)]
    slice_wise = family(config["family"]).slice_wise
    fp32, slices = [], 0
    for hu, models in held_out:
        exact = predictor(models, choose_path(cpu, "fp32"))
        fp32.append(exact(hu) > threshold)
        slices += len(exact.slice_plan(hu)) if slice_wise else 0
    margins = (0.0, *RECHECK_MARGINS) if slice_wise else (0.0,)
    results = {}
    for precision in precisions:
        path = _reduced_path(precision)
        checked = predictor(held_out[0][1], path).path if held_out else path
        if checked.precision != path.precision:  # this CPU computes it wrong (model.bf16_check): nothing to measure
            results[precision] = {"cases": len(held_out), "allowed": False, "refused": checked.reason}
            continue
        result: dict = {"cases": len(held_out), "margins": {}, "recheck_margin": None}
        for margin in margins:
            predictions = [predictor(models, path, margin).predict(hu) for hu, models in held_out]
            agreement = _agreement(fp32, [p.prob > threshold for p in predictions])
            rechecked = sum(p.rechecked for p in predictions) / max(slices, 1)
            result["margins"][str(margin)] = {**agreement, "rechecked": round(rechecked, 4)}
            if agreement["allowed"]:
                result["recheck_margin"] = margin
                break
        plain = result["margins"]["0.0"]
        results[precision] = {**result, "dice": plain["dice"], "volume_change": plain["volume_change"],
                              "allowed": result["recheck_margin"] is not None}
    return results


def _single_slice_choice(scores: dict[tuple, tuple[list[float], list[float]]], threshold: float,
                         share: float, keep_peak: float, min_peak: float) -> dict:
    """``single_slice_min_component_ml`` at the chosen threshold, intracranial share and peak rules: the
    best mean of the positive slices' mean Dice and the negative slices' mean score (ties: the smallest). The two
    halves count equally because a head has far more slices without blood than with it; a simple
    mean over slices would trade every small cross-section for a speck on a normal slice."""
    def rule(ml: float) -> tuple:  # with no minimum, keep_peak has nothing to keep: scored as off
        return threshold, share, ml, keep_peak if ml else 1.0, min_peak

    means = {}
    for ml in MIN_COMPONENT_CANDIDATES:
        positives, negatives = scores[rule(ml)]
        if positives and negatives:
            means[ml] = round((float(np.mean(positives)) + float(np.mean(negatives))) / 2, 4)
    if not means:
        return {}
    return {"single_slice_min_component_ml": max(means, key=lambda ml: (means[ml], -ml)),
            "single_slice_oof_dice": {str(ml): value for ml, value in means.items()},
            "single_slice_oof_slices": [len(part) for part in scores[rule(0.0)]]}


def fold_training(run: Path, config: dict, folds: list[int]) -> dict[str, dict]:
    """Each fold's training schedule (``RUN/fold<k>/training.json``; a run from before those records:
    config.json's, which holds the last ``fit``'s)."""
    records = {}
    for fold in folds:
        path = training_record(run, fold)
        records[f"fold{fold}"] = json.loads(path.read_text()) if path.is_file() else config.get("training", {})
    return records


def export_run(run: Path, weights_dir: Path, checkpoint: str = "best", threshold: float | None = None,
               min_component_ml: float | None = None, never_empty: bool = True, description: dict | None = None,
               device: torch.device | None = None, crop_margin: int | None = None,
               folds: list[int] | None = None, intracranial_share: float | None = None,
               keep_peak: float | None = None, mirror: bool = False, measure_bf16: bool = False,
               min_peak: float | None = None, measure_fp16: bool = False, tune_on: Path | None = None,
               slab_mm: float | None = None, brain_hu: bool = True,
               max_floor_share: float = FLOOR_SHARE) -> Manifest:
    """Write ``weights_dir`` from the run's folds (``folds``: a subset, e.g. those trained in the time
    there was); ``None`` settings are chosen out-of-fold, on the cases those folds held out, or with
    ``tune_on`` on that folder's cases as the ensemble predicts them.
    ``measure_bf16``: decide ``cpu_precision`` on a CPU without native bf16 too (emulated, slow);
    ``measure_fp16``: decide ``cuda_precision`` (fp16 emulated on the CPU, slow; unmeasured: fp32);
    ``slab_mm``: the thin-slice average's thickness instead of the run's (0: none);
    ``brain_hu``: measure the brain levels the folds were trained on (:func:`trained_brain_hu`);
    ``max_floor_share``: written as given, not tuned (the tuning applies it as given: docs/training.md,
    "The floor rule")."""
    config_path = run / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: not a training run folder (no config.json)")
    config = json.loads(config_path.read_text())
    states = fold_states(run, config, checkpoint, folds)
    inference = {**config["inference"], "mirror": mirror}
    if slab_mm is not None:
        inference["slab_mm"] = float(slab_mm) or None
    inference["brain_hu"] = trained_brain_hu(run, config, list(states)) if brain_hu else None
    config = {**config, "inference": inference}  # tuned as it will run: with the mirror view when asked
    slices = family(config["family"]).slice_wise
    tuning, single_slice_ml = None, None
    if None in (min_component_ml, intracranial_share, threshold, keep_peak, min_peak) or \
            (slices and crop_margin is None):
        margins = CROP_MARGIN_CANDIDATES if crop_margin is None else (crop_margin,)
        device = device or torch.device("cpu")
        cases = _tuning_set(tune_on, run / "cache", config, states, device) if tune_on else \
            _held_out(run, config, states, device)
        tuned_on = f"ensemble of folds {sorted(states)} on {tune_on}" if tune_on else "out of fold"
        tuning = tune_out_of_fold(cases, config, threshold, device, margins, tuned_on, intracranial_share,
                                  max_floor_share)
        (run / "export_tuning.json").write_text(json.dumps(tuning, indent=1) + "\n")
        min_component_ml = tuning["min_component_ml"] if min_component_ml is None else min_component_ml
        keep_peak = tuning["keep_peak"] if keep_peak is None else keep_peak
        min_peak = tuning["min_peak"] if min_peak is None else min_peak
        single_slice_ml = tuning.get("single_slice_min_component_ml")
        threshold, intracranial_share = tuning["threshold"], tuning["intracranial_share"]  # given: passed through
        crop_margin = tuning["crop_margin"]
    if slices:
        inference["crop_margin"] = int(crop_margin)
    measured = _precisions(measure_bf16, measure_fp16)
    agreements = precision_agreement(_held_out(run, config, states, torch.device("cpu")), config, threshold,
                                     inference, measured) if measured else {}
    tuning = _allow_precisions(inference, agreements, tuning)
    scores = []
    for fold in states:
        last_stage = training_family(config["family"]).stages[-1]
        value = float(_load(checkpoint_path(run, fold, last_stage, checkpoint)).get("val_dice", math.nan))
        scores.append(None if math.isnan(value) else round(value, 4))
    info = {"trained_on": config["dataset"], "training": fold_training(run, config, list(states)),
            "checkpoint": checkpoint,
            "cv_folds": f"{sorted(states)} of {config['folds']}",
            "fold_val_dice": scores, "exported": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if tuning:
        info.update({k: tuning[k] for k in TUNING_TABLES if tuning.get(k)})
    manifest = {"family": config["family"], "input_mode": config["input_mode"], "network": config["network"],
                "threshold": threshold, "inference": inference,
                "postprocess": {"min_component_ml": float(min_component_ml), "never_empty": never_empty,
                                "intracranial_share": float(intracranial_share or 0.0),
                                "keep_peak": float(keep_peak), "min_peak": float(min_peak),
                                "max_floor_share": float(max_floor_share),
                                "single_slice_min_component_ml": single_slice_ml},
                "description": {**info, **(description or {})}}
    return write_weights(weights_dir, manifest, list(states.values()))


def _precisions(measure_bf16: bool, measure_fp16: bool) -> tuple[str, ...]:
    """The reduced precisions to measure: bf16 where native (or asked for), fp16 when asked for."""
    return (("bf16",) if cpu_has_native_bf16() or measure_bf16 else ()) + (("fp16",) if measure_fp16 else ())


def _allow_precisions(inference: dict, agreements: dict[str, dict], tuning: dict | None) -> dict | None:
    """Set ``cpu_precision``/``cuda_precision`` (and the recheck margin) in ``inference`` from the
    measured agreements (unmeasured: fp32); the tuning record with each agreement added."""
    for precision, key in (("bf16", "cpu_precision"), ("fp16", "cuda_precision")):
        agreement = agreements.get(precision, {"allowed": False})
        inference[key] = "auto" if agreement["allowed"] else "fp32"
        if agreement["allowed"] and agreement["recheck_margin"]:  # one margin serves both: the larger
            inference["recheck_margin"] = max(agreement["recheck_margin"], inference.get("recheck_margin", 0.0))
        if precision in agreements:
            tuning = {**(tuning or {}), f"{precision}_agreement": agreement}
    return tuning


def retune_weights(weights_dir: Path, out_dir: Path, tune_on: Path, cache: Path, measure_bf16: bool = False,
                   measure_fp16: bool = False, device: torch.device | None = None) -> Manifest:
    """A weights folder's post-processing chosen again on a labelled set, without its training run.

    The fold files are copied unchanged (their hashes verified first); the threshold, the component
    rules and the one-slice minimum are chosen on ``tune_on``'s labelled cases as the folds' ensemble
    predicts them in fp32, as export tunes (:func:`tune_out_of_fold` at the manifest's crop margin),
    and the reduced precisions measured again at the new threshold on the first of those cases. What a site with its
    own labelled scans, or a new tuning set, uses to re-choose the settings the masks depend on.
    """
    device = device or torch.device("cpu")
    checked = load_manifest(weights_dir)
    data = checked.to_dict()  # the file as write_weights wrote it (its lists as tuples)
    states = {index: read_fold(weights_dir / fold.file)
              for index, fold in enumerate(checked.folds)}
    inference = {**data["inference"], "recheck_margin": 0.0, "cpu_precision": "fp32", "cuda_precision": "fp32"}
    config = {key: data[key] for key in ("family", "input_mode", "network")} | {"inference": inference}
    margins = (inference.get("crop_margin") or 0,)
    tuning = tune_out_of_fold(_tuning_set(tune_on, cache, config, states, device), config, None, device, margins,
                              f"ensemble of the {len(states)} folds of {weights_dir} on {tune_on}",
                              max_floor_share=checked.postprocess.max_floor_share)
    measured = _precisions(measure_bf16, measure_fp16)
    agreements = precision_agreement(_tuning_set(tune_on, cache, config, states, torch.device("cpu")), config,
                                     tuning["threshold"], inference, measured) if measured else {}
    tuning = _allow_precisions(inference, agreements, tuning)
    postprocess = {**data["postprocess"], **{key: float(tuning[key]) for key in
                                             ("min_component_ml", "intracranial_share", "keep_peak", "min_peak")},
                   "single_slice_min_component_ml": tuning.get("single_slice_min_component_ml")}
    description = {key: value for key, value in data["description"].items() if key not in TUNING_TABLES}
    manifest = {**data, "threshold": tuning["threshold"], "inference": inference, "postprocess": postprocess,
                "description": {**description, **{k: tuning[k] for k in TUNING_TABLES if tuning.get(k)},
                                "retuned": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}}
    return write_weights(out_dir, manifest, [states[index] for index in sorted(states)])
