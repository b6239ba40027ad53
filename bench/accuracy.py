"""Accuracy of the shipped model against the HU-rule baseline on the same labelled cases, by bleed size.

    python3 bench/accuracy.py --data data/heldout --subset evaluation [--weights weights] [--out FILE.json]
    python3 bench/accuracy.py --data data/heldout --single-slices [...]
    python3 bench/accuracy.py --data data/heldout --offset-hu 10 [...]
    python3 bench/accuracy.py --data data/heldout --blur-mm 1.0 | --sharpen 0.7 [...]

With ``--single-slices`` each labelled case gives up to three one-slice inputs instead (its slices
with the largest, the median and the smallest cross-section of blood, at least ``MIN_SLICE_PIXELS``
pixels), scored the same way and binned by the blood's volume in that slice: the generated stand-in
for a set of single real slices with expert masks, where a rule made for volumes (the smallest
component kept, the never-empty fallback) meets a bleed cut to one slice.

With ``--offset-hu`` every voxel of every case is moved by that many HU before the model and the rule
see it: a scanner calibrated differently from the training heads (the predictor's brain-level shift,
:mod:`model.calibration`, is what is measured; each row records the shift it made). ``--blur-mm`` and
``--sharpen`` stand for another reconstruction kernel: each slice blurred by a Gaussian of that
standard deviation (a softer kernel, bone spread further into the brain under the inner table), or
unsharp-masked with that gain over a 1 mm Gaussian (a sharper one: edges and noise raised).

Each case is read and predicted exactly as ``process.py`` does it (canonical orientation, the
manifest's spacing, fold ensemble, post-processing); the baseline is :mod:`bench.hu_rule`. Cases
are binned by their true haemorrhage volume (< 1, 1–5, 5–30, > 30 mL); cases without blood are
the "normal heads", scored by the mL painted on them. Where the data folder holds the generator's
record (``cases.json``, :mod:`synthetic.dataset`), whole cases are also grouped by the subtype of their
largest haemorrhage: a thin subarachnoid bleed in the sulci and a round intraparenchymal one of the
same volume are not the same task. Prints Markdown tables and, with ``--out``, writes every case's
numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.hu_rule import hu_rule_mask
from evaluation.metrics import dice
from model.allocator import keep_freed_memory
from model.compute import cpu_model
from model.postprocess import postprocess
from model.predictor import EnsemblePredictor
from model.spacing import voxel_ml
from model.weights import load_manifest, load_models
from synthetic.dataset import RECORD
from training.data import canonical_arrays
from training.splits import find_cases

BINS = ((0.0, 1.0, "< 1 mL"), (1.0, 5.0, "1–5 mL"), (5.0, 30.0, "5–30 mL"), (30.0, float("inf"), "> 30 mL"))
SLICE_BINS = ((0.0, 0.5, "< 0.5 mL"), (0.5, 2.0, "0.5–2 mL"), (2.0, float("inf"), "≥ 2 mL"))
MIN_SLICE_PIXELS = 10  # a single-slice input holds at least this much blood


def main_subtypes(data: Path) -> dict[str, str]:
    """Case name → subtype of its largest labelled haemorrhage, from the generator's record (empty
    without one, or for a case without blood)."""
    record = data / RECORD
    if not record.is_file():
        return {}
    subtypes = {}
    for case in json.loads(record.read_text()):
        lesions = [lesion for lesion in case.get("lesions", []) if lesion["volume_ml"] > 0]
        if lesions:
            subtypes[case["case"]] = max(lesions, key=lambda lesion: lesion["volume_ml"])["subtype"]
    return subtypes


def picked_slices(label: np.ndarray, min_pixels: int = MIN_SLICE_PIXELS) -> list[int]:
    """Of the slices with at least ``min_pixels`` of blood, those with the smallest, the median and
    the largest cross-section (fewer when they coincide)."""
    areas = label.reshape(len(label), -1).sum(axis=1)
    candidates = np.flatnonzero(areas >= min_pixels)
    if candidates.size == 0:
        return []
    ordered = candidates[np.argsort(areas[candidates], kind="stable")]
    return sorted({int(ordered[0]), int(ordered[len(ordered) // 2]), int(ordered[-1])})


Labelled = tuple[str, np.ndarray, np.ndarray, tuple[float, float, float]]  # name, HU, 0/1 label, spacing (z, y, x)


def inputs(data: Path, subset: str, single_slices: bool) -> Iterator[Labelled]:
    """(name, HU, 0/1 label, spacing) of every case, or with ``single_slices`` of its picked slices."""
    for case in find_cases(data, subset):
        hu, label, spacing = canonical_arrays(case)  # read as training and process.py read a case
        if not single_slices:
            yield case.name, hu, label, spacing
            continue
        for z in picked_slices(label):
            yield f"{case.name}_z{z:02d}", hu[z: z + 1], label[z: z + 1], spacing


def another_scanner(hu: np.ndarray, spacing: tuple[float, float, float], offset_hu: float = 0.0,
                    blur_mm: float = 0.0, sharpen: float = 0.0) -> np.ndarray:
    """``hu`` as a scanner with another calibration (``offset_hu``) or reconstruction kernel would show it:
    each slice blurred (``blur_mm``, the Gaussian's SD) or unsharp-masked (``sharpen``, gain over a 1 mm
    Gaussian). All zero: ``hu`` itself."""
    if not (offset_hu or blur_mm or sharpen):
        return hu
    moved = hu.astype(np.float32) + np.float32(offset_hu)
    if blur_mm:
        moved = ndimage.gaussian_filter(moved, (0.0, blur_mm / spacing[1], blur_mm / spacing[2]))
    if sharpen:
        moved += np.float32(sharpen) * (moved - ndimage.gaussian_filter(moved, (0.0, 1.0 / spacing[1],
                                                                                1.0 / spacing[2])))
    return moved


def score_cases(data: Path, subset: str, weights: Path, single_slices: bool = False,
                offset_hu: float = 0.0, blur_mm: float = 0.0, sharpen: float = 0.0) -> list[dict]:
    """Per case (or picked slice): true mL, and for the model and the rule the predicted mL and DSC
    (None without blood); every case first made as :func:`another_scanner` would show it."""
    manifest = load_manifest(weights)
    device = torch.device("cpu")
    predictor = EnsemblePredictor(load_models(weights, manifest, device), manifest, device)
    subtypes = {} if single_slices else main_subtypes(data)  # a slice need not cut the case's largest bleed
    rows = []
    for name, hu, label_array, spacing in inputs(data, subset, single_slices):
        label = label_array > 0
        hu = another_scanner(hu, spacing, offset_hu, blur_mm, sharpen)
        started = time.perf_counter()
        prediction = predictor.predict(hu, spacing)
        cleaned = postprocess(prediction.prob, spacing, manifest.threshold, manifest.postprocess, hu=hu)
        seconds = time.perf_counter() - started
        masks = {"model": cleaned.mask > 0, "rule": hu_rule_mask(hu, spacing) > 0}
        ml = voxel_ml(spacing)
        row = {"case": name, "true_ml": round(float(label.sum()) * ml, 3), "seconds": round(seconds, 2),
               "fallback": cleaned.fallback, "hu_shift": prediction.hu_shift,
               "fold_dice": round(prediction.fold_dice, 4), "fold_max_ml": max(prediction.fold_ml or (0.0,)),
               "folds": len(prediction.fold_voxels)}
        if label.any() and name in subtypes:
            row["subtype"] = subtypes[name]
        for method, mask in masks.items():
            row[f"{method}_ml"] = round(float(mask.sum()) * ml, 3)
            row[f"{method}_dsc"] = round(dice(mask, label), 4) if label.any() else None
        rows.append(row)
        print(f"{name}: true {row['true_ml']:.2f} mL | model {row['model_ml']:.2f} mL DSC {row['model_dsc']} | "
              f"rule {row['rule_ml']:.2f} mL DSC {row['rule_dsc']} | {seconds:.1f} s", flush=True)
    return rows


def _mean(values: list[float]) -> str:
    return f"{np.mean(values):.3f}" if values else "–"


HEADER = ["| cases | n | DSC model | DSC HU rule | abs. volume error model (mL) | abs. volume error HU rule (mL) |",
          "|---|---|---|---|---|---|"]


def _group_lines(groups: list[tuple[str, list[dict]]]) -> list[str]:
    return [f"| {label} | {len(group)} | {_mean([r['model_dsc'] for r in group])} | "
            f"{_mean([r['rule_dsc'] for r in group])} | "
            f"{_mean([abs(r['model_ml'] - r['true_ml']) for r in group])} | "
            f"{_mean([abs(r['rule_ml'] - r['true_ml']) for r in group])} |" for label, group in groups]


def subtype_table(rows: list[dict]) -> str:
    """Markdown: the same scores for the cases with blood, by the subtype of their largest haemorrhage,
    and that subtype's cases under 1 mL."""
    lines = list(HEADER)
    for subtype in sorted({r["subtype"] for r in rows if r.get("subtype")}):
        group = [r for r in rows if r.get("subtype") == subtype]
        lines += _group_lines([(subtype, group), (f"{subtype}, < 1 mL", [r for r in group if r["true_ml"] < 1.0])])
    return "\n".join(lines)


def table(rows: list[dict], bins: tuple[tuple[float, float, str], ...] = BINS) -> str:
    """Markdown: DSC and mean absolute volume error per bin, and mL on the heads without blood."""
    lines = list(HEADER)
    positives = [r for r in rows if r["true_ml"] > 0]
    groups = [(label, [r for r in positives if low <= r["true_ml"] < high]) for low, high, label in bins]
    groups.append(("all with blood", positives))
    if bins == BINS:
        groups.append(("> 1 mL", [r for r in positives if r["true_ml"] >= 1.0]))
    lines += _group_lines(groups)
    normal = [r for r in rows if r["true_ml"] == 0]
    model_ml, rule_ml = [r["model_ml"] for r in normal], [r["rule_ml"] for r in normal]
    if normal:
        lines.append(f"| no blood: mL painted (mean / max) | {len(normal)} | {np.mean(model_ml):.3f} / "
                     f"{np.max(model_ml):.3f} mL | {np.mean(rule_ml):.3f} / {np.max(rule_ml):.3f} mL | | |")
    return "\n".join(lines)


def is_bad(row: dict) -> bool:
    """A case a person should see: a bleed segmented with DSC < 0.5, or ≥ 0.5 mL painted on a normal head."""
    return row["model_dsc"] < 0.5 if row["true_ml"] > 0 else row["model_ml"] >= 0.5


def review_table(rows: list[dict], thresholds: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
                 min_ml: float = 0.1) -> str:
    """Markdown: for each fold-agreement threshold, how many bad cases the review flag catches and how
    many good ones it flags too (:mod:`model.review`'s rule)."""
    bad = [r for r in rows if is_bad(r)]
    good = [r for r in rows if not is_bad(r)]
    lines = ["| flag when fold Dice < | bad cases flagged | good cases flagged (false alarms) |", "|---|---|---|"]
    for threshold in thresholds:
        def flagged(r: dict, t: float = threshold) -> bool:
            return r["fold_dice"] < t and r["fold_max_ml"] >= min_ml
        lines.append(f"| {threshold:.1f} | {sum(map(flagged, bad))} of {len(bad)} | "
                     f"{sum(map(flagged, good))} of {len(good)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="INSTANCE-layout folder")
    parser.add_argument("--subset", default="evaluation", help="sub-folder with data/ and label/ (default evaluation)")
    parser.add_argument("--weights", type=Path, default=Path(__file__).resolve().parents[1] / "weights")
    parser.add_argument("--out", type=Path, default=None, help="write the per-case numbers here (JSON)")
    parser.add_argument("--single-slices", action="store_true",
                        help="score up to three one-slice inputs per case with blood instead of whole cases")
    parser.add_argument("--offset-hu", type=float, default=0.0,
                        help="move every voxel by this many HU first (a differently calibrated scanner)")
    parser.add_argument("--blur-mm", type=float, default=0.0,
                        help="blur each slice by a Gaussian of this SD in mm first (a softer reconstruction kernel)")
    parser.add_argument("--sharpen", type=float, default=0.0,
                        help="unsharp-mask each slice with this gain over a 1 mm Gaussian first (a sharper kernel)")
    args = parser.parse_args(argv)
    keep_freed_memory()  # as process.py runs: the seconds per case are its
    print(f"cpu={cpu_model()} threads={torch.get_num_threads()}", flush=True)
    rows = score_cases(args.data, args.subset, args.weights, args.single_slices, args.offset_hu,
                       args.blur_mm, args.sharpen)
    print(table(rows, SLICE_BINS if args.single_slices else BINS))
    if any(r.get("subtype") for r in rows):
        print()
        print(subtype_table(rows))
    # one slice's folds are no case-level review, and one fold agrees with itself
    if not args.single_slices and max((r["folds"] for r in rows), default=0) > 1:
        print()
        print(review_table(rows))
    seconds = [r["seconds"] for r in rows]
    print(f"{'slices' if args.single_slices else 'cases'}={len(rows)} model_seconds_per_case={np.mean(seconds):.2f} "
          f"fallbacks={sum(r['fallback'] for r in rows)}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
