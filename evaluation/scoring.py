"""Scoring folders of masks: pairing files by case name, scoring cases in parallel, the summary and ranking.

A case is scored as the organisers did (SPEC §4): arrays as stored, spacing from the label's header,
the prediction's header ignored. Problems with one case become a note on its row, never a failed run.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from evaluation.metrics import CaseMetrics, score_case
from evaluation.report import CaseSlice, case_picture
from model.io import IMAGE_SUFFIXES, CaseError, as_volume, case_name, read_image, to_canonical
from model.spacing import voxel_ml

METRICS = ("dsc", "hd", "rvd", "nsd")
HIGHER_IS_BETTER = {"dsc": True, "hd": False, "rvd": False, "nsd": True}


@dataclass(frozen=True)
class Pair:
    """One case: its label, and the prediction and CT found under the same name (None when absent)."""

    name: str
    label: Path
    prediction: Path | None
    image: Path | None = None


@dataclass
class CaseResult:
    """One row of metrics.csv (``case,dsc,hd,rvd,nsd`` first) and the report's picture material."""

    case: str
    dsc: float = math.nan
    hd: float = math.nan
    rvd: float = math.nan
    nsd: float = math.nan
    pred_ml: float = math.nan
    label_ml: float = math.nan
    pred_voxels: int | None = None
    label_voxels: int | None = None
    note: str = ""
    picture: bytes | None = field(default=None, repr=False)  # PNG of the slice with the most haemorrhage

    @property
    def scored(self) -> bool:
        """Whether the metrics were computed (a case with an unreadable file or a shape mismatch is not)."""
        return self.label_voxels is not None


CSV_COLUMNS = [f.name for f in fields(CaseResult) if f.name != "picture"]


def mask_files(folder: Path) -> dict[str, Path]:
    """Image files of a folder by case name; two files with one case name are refused."""
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or not path.name.lower().endswith(IMAGE_SUFFIXES):
            continue
        name = case_name(path)
        if name in found:
            raise ValueError(f"{folder}: two files for case {name!r} ({found[name].name}, {path.name})")
        found[name] = path
    return found


def pair_files(predictions: Path, labels: Path, images: Path | None = None) -> tuple[list[Pair], list[str]]:
    """Pairs for every label, and the names of predictions that have no label (listed, not scored)."""
    label_files, pred_files = mask_files(labels), mask_files(predictions)
    image_files = mask_files(images) if images is not None else {}
    if not label_files:
        raise ValueError(f"{labels}: no label files (.nii.gz, .nii or .mha)")
    pairs = [Pair(name, path, pred_files.get(name), image_files.get(name)) for name, path in label_files.items()]
    return pairs, sorted(set(pred_files) - set(label_files))


def label_spacing(path: Path, image: sitk.Image) -> tuple[float, ...]:
    """The label's voxel size along the axes of ``sitk.GetArrayFromImage`` (z, y, x).

    For NIfTI it is pixdim[1:4] read from the header, as the official script does (it stays float32
    there, as in the official script); other formats, and a 2D slice (one :data:`ONE_SLICE_MM` thick),
    use the image's spacing.
    """
    if path.name.lower().endswith((".nii", ".nii.gz")) and image.GetDimension() == 3:
        pixdim = nib.load(str(path)).header["pixdim"][1:4]
        return tuple(float(v) for v in pixdim[::-1])
    return tuple(as_volume(image).GetSpacing()[::-1])


def _pick_slice(label: sitk.Image, prediction: sitk.Image, ct: sitk.Image | None) -> CaseSlice:
    """The canonical axial slice with the most label (or prediction, when the label is empty) voxels."""
    canonical_label = to_canonical(label)
    lab = sitk.GetArrayFromImage(canonical_label) != 0
    pred = sitk.GetArrayFromImage(to_canonical(prediction)) != 0
    if pred.shape != lab.shape:  # stored in another orientation than the label: draw it as stored
        pred = sitk.GetArrayFromImage(prediction) != 0
        pred = pred if pred.shape == lab.shape else np.zeros_like(lab)
    counts = lab.sum(axis=(1, 2)) if lab.any() else pred.sum(axis=(1, 2))
    index = int(np.argmax(counts)) if counts.any() else lab.shape[0] // 2
    hu = None
    if ct is not None:
        ct_array = sitk.GetArrayFromImage(to_canonical(ct))
        hu = ct_array[index].astype(np.float32) if ct_array.shape == lab.shape else None
    spacing = canonical_label.GetSpacing()
    return CaseSlice(index, lab[index], pred[index], hu, (spacing[1], spacing[0]))


def _geometry_note(prediction: sitk.Image, label: sitk.Image) -> str:
    """A warning when the prediction's header disagrees with the label's (scored as stored regardless)."""
    same = (np.allclose(prediction.GetSpacing(), label.GetSpacing(), rtol=1e-4)
            and np.allclose(prediction.GetDirection(), label.GetDirection(), atol=1e-4)
            and np.allclose(prediction.GetOrigin(), label.GetOrigin(), atol=1e-2))
    return "" if same else "prediction header differs from label (ignored, as officially)"


def _value_note(array: np.ndarray, what: str) -> str:
    """A warning for values other than 0 and 1, which the official script would not score as intended."""
    other = (array != 0) & (array != 1)
    if not other.any():
        return ""
    values = np.unique(array[other])
    shown = ", ".join(f"{v:g}" for v in values[:5]) + (", …" if values.size > 5 else "")
    return f"{what} holds values other than 0/1 ({shown}); scored as uint8 != 0"


def evaluate_pair(pair: Pair, picture: bool = False) -> CaseResult:
    """Score one case; every problem ends up in the row's note instead of an exception."""
    result = CaseResult(pair.name)
    notes: list[str] = []
    try:
        label_file = read_image(pair.label)
        spacing = label_spacing(pair.label, label_file)
        label = as_volume(label_file)  # a 2D slice is scored as a volume of one slice
        label_array = sitk.GetArrayFromImage(label)
        if pair.prediction is None:
            notes.append("no prediction: scored as empty")
            prediction = sitk.Image(label.GetSize(), sitk.sitkUInt8)
            prediction.CopyInformation(label)
        else:
            prediction = as_volume(read_image(pair.prediction))
        pred_array = sitk.GetArrayFromImage(prediction)
        if pred_array.shape != label_array.shape:
            raise CaseError(f"shape mismatch: prediction {prediction.GetSize()}, label {label.GetSize()}")
        if pair.prediction is not None:
            notes.append(_geometry_note(prediction, label))
        notes += [_value_note(pred_array, "prediction"), _value_note(label_array, "label")]
        metrics: CaseMetrics = score_case(pred_array, label_array, spacing)
        if metrics.pred_voxels == 0 and metrics.label_voxels and pair.prediction is not None:
            notes.append("empty prediction")
        if metrics.label_voxels == 0:
            notes.append("empty label: RVD undefined (the official script stops here)")
        ml = voxel_ml(spacing)
        result.dsc, result.hd, result.rvd, result.nsd = metrics.dsc, metrics.hd, metrics.rvd, metrics.nsd
        result.pred_voxels, result.label_voxels = metrics.pred_voxels, metrics.label_voxels
        result.pred_ml, result.label_ml = metrics.pred_voxels * ml, metrics.label_voxels * ml
        if picture:
            ct = None
            if pair.image is not None:
                try:
                    ct = read_image(pair.image)
                except CaseError as err:
                    notes.append(f"CT not drawn: {err}")
            result.picture = case_picture(_pick_slice(label, prediction, ct))
    except (CaseError, ValueError) as err:
        notes.append(str(err))
    result.note = "; ".join(n for n in notes if n)
    return result


def _init_worker() -> None:
    """One thread per worker process: the processes are the parallelism."""
    import torch

    torch.set_num_threads(1)


def evaluate_pairs(pairs: Sequence[Pair], workers: int = 1, picture: bool = False,
                   progress: Callable[[Iterable[CaseResult], int], Iterable[CaseResult]] | None = None,
                   ) -> list[CaseResult]:
    """Score every pair, ``workers`` processes at a time, in the pairs' order."""
    def tracked(results: Iterable[CaseResult]) -> list[CaseResult]:
        return list(progress(results, len(pairs)) if progress else results)

    if workers <= 1 or len(pairs) <= 1:
        return tracked(evaluate_pair(p, picture) for p in pairs)
    with ProcessPoolExecutor(max_workers=min(workers, len(pairs)), initializer=_init_worker) as pool:
        return tracked(pool.map(evaluate_pair, pairs, [picture] * len(pairs)))


def _number(value: float) -> str | float:
    """A JSON-safe number: infinities and NaN as the strings ``inf``, ``-inf`` and ``nan``."""
    return value if math.isfinite(value) else str(value)


def _std(values: np.ndarray) -> float:
    with np.errstate(invalid="ignore"):
        return float(np.std(values))


def summarise(results: Sequence[CaseResult], unmatched: Sequence[str] = ()) -> dict:
    """Per metric over the scored cases: mean (inf when any value is), std (population), median, count,
    infinite count, and the mean over finite values. NaN values (RVD of an empty label, NSD of two
    empty masks) are left out of ``count`` and the statistics, and counted in ``nan``."""
    scored = [r for r in results if r.scored]
    summary: dict = {"cases": len(results), "scored": len(scored), "metrics": {}}
    for metric in METRICS:  # std of values holding inf is NaN: reported as such, without a warning
        values = np.array([getattr(r, metric) for r in scored], dtype=np.float64)
        present = values[~np.isnan(values)]
        finite = present[np.isfinite(present)]
        summary["metrics"][metric] = {
            "mean": _number(float(np.mean(present))) if present.size else "nan",
            "std": _number(_std(present)) if present.size else "nan",
            "median": _number(float(np.median(present))) if present.size else "nan",
            "count": int(present.size),
            "inf": int(np.isinf(present).sum()),
            "nan": int(values.size - present.size),
            "finite_mean": _number(float(np.mean(finite))) if finite.size else "nan",
        }
    summary["not_scored"] = {r.case: r.note for r in results if not r.scored}
    summary["flagged"] = {r.case: r.note for r in results if r.scored and r.note}
    summary["unmatched_predictions"] = list(unmatched)
    return summary


def _csv_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # full precision; inf and nan spelt ``inf`` and ``nan``
    return str(value)


def write_metrics_csv(results: Sequence[CaseResult], path: Path) -> None:
    """metrics.csv: ``case,dsc,hd,rvd,nsd`` then volumes (mL), voxel counts and the note."""
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(CSV_COLUMNS)
        for result in results:
            row = asdict(result)
            writer.writerow([_csv_value(row[c]) for c in CSV_COLUMNS])


def write_summary(summary: dict, path: Path) -> None:
    """summary.json, strict JSON (non-finite numbers are strings)."""
    path.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")


def default_workers() -> int:
    """The CPUs this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def read_summary_means(path: Path) -> dict[str, float]:
    """The four metric means of a summary.json written by :func:`write_summary`."""
    try:
        metrics = json.loads(path.read_text())["metrics"]
        return {m: float(metrics[m]["mean"]) for m in METRICS}
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: not a summary.json of evaluate.py ({err})") from None


def rank(means: dict[str, dict[str, float]], method: str = "min") -> list[dict]:
    """The challenge's ranking: each metric's mean ranked across entries (DSC and NSD higher is better,
    HD and RVD lower), equal means tied, the four ranks averaged; the entries sorted by that average.

    Ties use standard competition ranking (``min``: 1, 2, 2, 4), as grand-challenge leaderboards
    rank equal scores; a NaN mean ranks as the worst value. The final position ranks the average rank the same way.
    """
    from scipy.stats import rankdata

    names = list(means)
    rows = {name: {"name": name, **means[name]} for name in names}
    for metric in METRICS:  # std of values holding inf is NaN: reported as such, without a warning
        values = np.array([means[n][metric] for n in names], dtype=np.float64)
        key = -values if HIGHER_IS_BETTER[metric] else values
        ranks = rankdata(np.where(np.isnan(key), np.inf, key), method=method)
        for name, r in zip(names, ranks, strict=True):
            rows[name][f"rank_{metric}"] = float(r)
    for row in rows.values():
        row["mean_rank"] = float(np.mean([row[f"rank_{m}"] for m in METRICS]))
    positions = rankdata([rows[n]["mean_rank"] for n in names], method=method)
    for name, position in zip(names, positions, strict=True):
        rows[name]["position"] = int(position)
    return sorted(rows.values(), key=lambda r: (r["position"], r["name"]))


RANK_COLUMNS = ["position", "name", *METRICS, *(f"rank_{m}" for m in METRICS), "mean_rank"]


def write_ranking_csv(rows: Sequence[dict], path: Path) -> None:
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(RANK_COLUMNS)
        for row in rows:
            writer.writerow([_csv_value(row[c]) for c in RANK_COLUMNS])


def format_ranking(rows: Sequence[dict]) -> str:
    """The ranking as a plain-text table."""
    header = f"{'pos':>3}  {'name':<24} {'DSC':>8} {'HD':>9} {'RVD':>8} {'NSD':>8}  {'ranks D/H/R/N':>15} {'mean':>5}"
    lines = [header, "-" * len(header)]
    for r in rows:
        ranks = "/".join(f"{r[f'rank_{m}']:g}" for m in METRICS)
        lines.append(f"{r['position']:>3}  {r['name'][:24]:<24} {r['dsc']:>8.4f} {r['hd']:>9.3f} {r['rvd']:>8.4f} "
                     f"{r['nsd']:>8.4f}  {ranks:>15} {r['mean_rank']:>5.2f}")
    return "\n".join(lines)
