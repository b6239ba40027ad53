"""Inference speed benchmark: the ensemble predictor against a straightforward MONAI pipeline.

    python bench/run.py [--quick | --tiny] [--repeat N] [--device cpu|cuda|all] [--json PATH] [--threads N]
                        [--precision auto|fp32] [--baseline-keeps-memory] [--full-weights DIR]
                        [--cascade-weights DIR]

For a generated 512 × 512 head CT it times end to end (read, window + ensemble, post-process,
write) and each stage, for both model families at the shipped size and at the seeds' full size
(32 initial features), on the CPU and on CUDA when present; the same case goes through the baseline
(``bench/baseline.py``) and the two masks are compared (Dice, max |Δ probability|). It counts the
FLOPs of every network call, measures the machine's matmul peak, and prints the fraction of peak
the ensemble reached. Rows too slow for the CPU run on fewer slices or folds, say so in the table,
and give an extrapolated time for a 32-slice, 5-fold case (the 2D work is linear in both).

Random-weight networks give probabilities near 0.5 everywhere, where a threshold is unstable; so
random heads are rescaled until each fold's logits have unit spread ×8 with 30 % of a sample slice
positive (the ensemble then splits clearly at 0.5). With trained weights in ``weights/`` (shipped
size), given with ``--full-weights`` (seed size) or ``--cascade-weights`` (a 3D cascade of the shipped
size) they are used as they are, on the compute path their manifest allows. Output: a table, a JSON
file, and a last line
``speedup=<x> fraction_of_peak=<y> seconds_per_case=<z> peak_mb=<m>`` for the full-size 2D
ensemble on the fastest device present (speedup measured on the case that row ran), followed by
``cpu=<model>``. It first names the machine: CPU model, the ISA flags that decide the compute path
(:mod:`model.compute`), and the fp32 and (where native) bf16 matmul peaks; each row's fraction of peak
is taken against the peak of the precision its path computes in. Ours takes the path the CPU allows
(``--precision fp32`` forces fp32); the baseline is always fp32. Ours keeps freed memory in the
process, as process.py does (:mod:`model.allocator`); the baseline runs with glibc's defaults, as a
user's script would, unless ``--baseline-keeps-memory``. Each pipeline runs once untimed per row
first (kernel choice, first touch of memory; its time is kept as ``first_ensemble_seconds``, what a
one-case container run pays), then ``--repeat N`` alternates ours and the baseline N times and keeps
each one's fastest run, for shared machines whose speed drifts.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from baseline import baseline_probability  # noqa: E402
from case import head_ct, to_image  # noqa: E402
from measure import ShapeRecorder, matmul_peak, peak_memory, sync  # noqa: E402

from model.allocator import keep_freed_memory  # noqa: E402
from model.compute import choose_path, cpu_flags, cpu_has_native_bf16, cpu_model  # noqa: E402
from model.crop_border import crop_sides  # noqa: E402
from model.families import CASCADE3D, SEGRESNET2D, Family, family  # noqa: E402
from model.head import head_box, head_mask  # noqa: E402
from model.io import LoadedCase, read_image, write_image_atomic  # noqa: E402
from model.overlap import dice  # noqa: E402
from model.postprocess import postprocess  # noqa: E402
from model.predictor import PAD_HU, EnsemblePredictor  # noqa: E402
from model.weights import Manifest, WeightsError, build_model, load_manifest, load_models, write_weights  # noqa: E402
from model.windowing import neighbour_span, window_slices, window_volume  # noqa: E402

FULL_SLICES, FULL_FOLDS = 32, 5
SHIPPED_DEFAULTS = {  # rows without trained weights of their family; the rest are the family's defaults
    SEGRESNET2D.name: {"input_mode": "windows3", "network": {"init_filters": 8}, "inference": {"batch_size": 8}},
    CASCADE3D.name: {"input_mode": "windows3", "network": {"init_filters": 8}, "inference": {"batch_size": 2}},
}


@dataclass
class Row:
    family: str
    size: str  # "shipped" or "full"
    device: str
    slices: int = FULL_SLICES
    folds: int = FULL_FOLDS
    field: int = 512
    baseline: bool = True

    @property
    def name(self) -> str:
        return f"{self.family} {self.size} {self.device}"

    @property
    def spec(self) -> Family:
        return family(self.family)

    @property
    def reduced(self) -> bool:
        return (self.slices, self.folds, self.field) != (FULL_SLICES, FULL_FOLDS, 512)


def plan(quick: bool, devices: list[str], tiny: bool = False) -> list[Row]:
    """The rows to run: everything at full case size on CUDA, slimmer cases where CPU time demands;
    ``tiny``: per device a 128² row of each family, one fold (the pipelines run end to end)."""
    rows: list[Row] = []
    two, three = SEGRESNET2D.name, CASCADE3D.name
    for device in devices:
        if tiny:
            rows += [Row(two, "full", device, slices=2, folds=1, field=128),
                     Row(three, "shipped", device, slices=4, folds=1, field=128)]
        elif device == "cuda":
            rows += [Row(f, s, device) for f in (two, three) for s in ("shipped", "full")]
            rows.append(Row(two, "full", device, slices=70, baseline=False))
        elif quick:
            rows += [Row(two, "shipped", device, folds=2),
                     Row(two, "full", device, slices=2, folds=1),
                     Row(three, "shipped", device, slices=16, folds=1),
                     Row(two, "shipped", device, slices=70, folds=1, baseline=False)]
        else:
            rows += [Row(two, "shipped", device), Row(two, "full", device, slices=4),
                     Row(three, "shipped", device, folds=1),
                     Row(three, "full", device, slices=16, folds=1, field=256),
                     Row(two, "shipped", device, slices=70, folds=1, baseline=False)]
    return rows


def manifest_settings(family: str, size: str, given: dict[tuple[str, str], Path] | None = None
                      ) -> tuple[dict, Path | None]:
    """Manifest fields for a row, and the trained weights folder when the row can use it: one ``given`` for
    its (family, size) (``--full-weights``, ``--cascade-weights``), else ``weights/`` for the shipped size."""
    if given and (family, size) in given:
        return {}, given[(family, size)]
    settings = dict(SHIPPED_DEFAULTS[family])
    shipped = ROOT / "weights"
    if (shipped / "manifest.json").is_file():
        trained = json.loads((shipped / "manifest.json").read_text())
        if trained.get("family") == family:
            settings = {k: trained[k] for k in ("input_mode", "network", "inference", "threshold") if k in trained}
            if size == "shipped":
                return settings, shipped
    if size == "full":
        settings = {**settings, "network": {"init_filters": 32}}
    return settings, None


def final_head(model: nn.Module) -> nn.Conv2d | nn.Conv3d:
    """The convolution that produces the network's output logit."""
    if hasattr(model, "stage2"):
        return model.stage2.head.conv.conv
    return model.up_layers[-1].head


@torch.inference_mode()
def calibrate(model: nn.Module, spec: Family, hu: np.ndarray, device: torch.device) -> None:
    """Rescale a random head so its logits on a sample of the case have spread 8, 30 % positive."""
    crop = torch.from_numpy(hu[head_box(hu)].astype(np.float32))
    if spec.slice_wise:  # the middle slice at half resolution
        sample = torch.nn.functional.avg_pool2d(window_slices(crop[len(crop) // 2:][:1], "windows3"), 2)
    else:  # a patch of up to 16 × 96 × 96 at the crop's centre
        centre = [n // 2 for n in crop.shape]
        patch = tuple(slice(max(c - h, 0), c + h) for c, h in zip(centre, (8, 48, 48), strict=True))
        sample = window_volume(crop[patch])[None]
    factor = model.shape_factor()
    pads = [p for n, f in zip(reversed(sample.shape[2:]), reversed(tuple(factor)), strict=True) for p in (0, -n % f)]
    sample = torch.nn.functional.pad(sample, pads)  # windowed air is 0
    channels = next(model.parameters()).shape[1]
    if sample.shape[1] != channels:  # slice modes: the windows stand in for the neighbours
        sample = sample.repeat(1, channels // sample.shape[1], *[1] * (sample.dim() - 2))
    logits = model(sample.to(device)).float().flatten()
    centre, spread = torch.quantile(logits.cpu(), 0.7), logits.std().cpu().clamp_min(1e-6)
    head = final_head(model)
    head.bias -= centre.to(device)
    head.weight *= (8.0 / spread).to(device)
    head.bias *= (8.0 / spread).to(device)


def make_models(row: Row, hu: np.ndarray, workdir: Path,
                given: dict[tuple[str, str], Path] | None = None) -> tuple[list[nn.Module], Manifest, bool]:
    """Fold networks for a row on its device: trained weights if there are, else calibrated random ones."""
    device = torch.device(row.device)
    settings, trained = manifest_settings(row.family, row.size, given)
    if trained is not None:
        manifest = load_manifest(trained)
        return load_models(trained, manifest, device)[: row.folds], manifest, True
    data = {"family": row.family, **settings}
    probe = Manifest.from_dict({**data, "folds": [{"file": "-", "sha256": "-"}]})
    states = []
    for fold in range(row.folds):
        torch.manual_seed(fold)
        states.append(build_model(probe).state_dict())
    folder = workdir / f"weights-{row.family}-{row.size}"
    manifest = write_weights(folder, data, states)
    models = load_models(folder, manifest, device)
    for model in models:
        calibrate(model, row.spec, hu, device)
    return models, manifest, False


def timed_pipeline(path: Path, output: Path, predict: Callable[[np.ndarray], np.ndarray], manifest: Manifest,
                   device: torch.device) -> dict:
    """Run read → predict → post-process → write once; seconds per stage, probability and mask."""
    seconds: dict[str, float] = {}
    with peak_memory(device) as memory:
        start = time.perf_counter()
        case = LoadedCase.of(read_image(path), path)  # the container's read stage
        hu = case.hu
        seconds["read"] = time.perf_counter() - start
        start = time.perf_counter()
        prob = predict(hu)
        sync(device)
        seconds["ensemble"] = time.perf_counter() - start
        start = time.perf_counter()
        mask = postprocess(prob, case.spacing_zyx, manifest.threshold, manifest.postprocess, hu=hu).mask
        seconds["postprocess"] = time.perf_counter() - start
        start = time.perf_counter()
        write_image_atomic(case.mask_image(mask), output)
        seconds["write"] = time.perf_counter() - start
    seconds["end_to_end"] = sum(seconds.values())
    return {"seconds": seconds, "memory": memory, "prob": prob, "mask": mask}


def recorded_modules(models: list[nn.Module]) -> dict[str, nn.Module]:
    modules: dict[str, nn.Module] = {}
    for index, model in enumerate(models):
        if hasattr(model, "stage1"):
            modules |= {f"fold{index}.stage1": model.stage1, f"fold{index}.stage2": model.stage2}
        else:
            modules[f"fold{index}"] = model
    return modules


def same_input_reference(predictor: EnsemblePredictor, hu: np.ndarray) -> np.ndarray:
    """The baseline's plain computation on exactly the crops ``predictor`` feeds its networks (its
    own copies of them: made with ``winograd=False``, direct convolutions).

    Against the uncropped baseline the predictor differs by what the crop changes (2D: only near the
    crop's border, batch norm; 3D: everything, since instance norm's statistics and the sliding
    window's grid depend on the air around the head); this reference isolates the pipeline:
    batching, fp16, layout, Winograd's rounding. 2D: each slice's box (the predictor's ``slice_plan``),
    padded with air after the last row and column to the network's shape factor, its inner sides
    edge-padded as the predictor does;
    3D: the head's box.
    """
    models, manifest, device = predictor.models, predictor.manifest, predictor.device
    prob = np.zeros(hu.shape, dtype=np.float32)
    if not manifest.spec.slice_wise:
        box = head_box(hu)
        prob[box] = baseline_probability(models, manifest, np.ascontiguousarray(hu[box]), device)
        return prob
    factor = models[0].shape_factor()
    for z, rows, cols in predictor.slice_plan(hu):
        span = neighbour_span(z, hu.shape[0])
        crop = hu[span, rows, cols]
        crop = np.pad(crop, [(0, 0), *[(0, -n % f) for n, f in zip(crop.shape[1:], factor, strict=True)]],
                      constant_values=PAD_HU)
        with ExitStack() as stack:
            for border in predictor.borders:
                stack.enter_context(border.inner(crop_sides(rows, cols, *hu.shape[1:])))
            plain = baseline_probability(models, manifest, np.ascontiguousarray(crop), device)[z - span.start]
        prob[z, rows, cols] = plain[: rows.stop - rows.start, : cols.stop - cols.start]
    return prob


def case_volume(row: Row) -> np.ndarray:
    """The row's case: a reduced 2D case takes evenly spaced slices of the 32-slice head (small and
    large cross-sections alike, so extrapolating is fair); a reduced 3D case its middle slabs."""
    if row.slices >= FULL_SLICES:
        return head_ct(row.slices, row.field)
    full = head_ct(FULL_SLICES, row.field)
    if row.spec.slice_wise:
        return full[np.linspace(0, FULL_SLICES - 1, row.slices + 2).round().astype(int)[1:-1]]
    start = (FULL_SLICES - row.slices) // 2
    return full[start: start + row.slices]


def timed_runs(repeat: int, path: Path, output: Path, predict: Callable[[np.ndarray], np.ndarray],
               manifest: Manifest, device: torch.device, modules: dict[str, nn.Module]) -> Iterator[dict]:
    """``repeat`` timed pipelines, one per ``next``; the first records the network calls (``"flops"``)."""
    for attempt in range(repeat):
        recorder = ShapeRecorder(modules) if attempt == 0 else None
        run = timed_pipeline(path, output, predict, manifest, device)
        if recorder is not None:
            recorder.remove()
            run["flops"] = recorder.flops()
        yield run


def seconds_list(runs: list[dict]) -> str:
    return " ".join(f"{run['seconds']['end_to_end']:.2f}" for run in runs)


ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16")


def run_row(row: Row, workdir: Path, quick: bool = False, repeat: int = 1, precision: str = "auto",
            given: dict[tuple[str, str], Path] | None = None, baseline_keeps_memory: bool = False) -> dict:
    """One row; with ``repeat`` > 1 ours and the baseline alternate and each keeps its fastest run (on a
    shared machine, contention only ever adds time, and alternating exposes both to the same drift).

    Ours runs with freed memory kept in the process, as process.py runs (:mod:`model.allocator`); the
    baseline with glibc's defaults, as a user's script runs, unless ``baseline_keeps_memory``."""
    device = torch.device(row.device)
    hu = case_volume(row)
    path = workdir / f"case-{row.slices}-{row.field}.nii.gz"
    sitk.WriteImage(to_image(hu), str(path))
    models, manifest, trained = make_models(row, hu.astype(np.float32), workdir, given)
    # the machine's path (trained weights: as their manifest allows, as process.py takes it); the Dice columns
    # show its effect
    allowed = manifest.inference.cpu_precision if trained else "auto", \
        manifest.inference.cuda_precision if trained else "auto"
    compute = choose_path(device, precision, allowed[0], cuda_precision=allowed[1])
    predictor = EnsemblePredictor(models, manifest, device, mirror=False, path=compute)

    def plain(volume: np.ndarray) -> np.ndarray:
        return baseline_probability(models, manifest, volume, device)
    # one pass each before the timed ones (cuDNN's and oneDNN's kernels for these shapes, the allocators'
    # first touch of their memory): the timed runs are a folder's steady state; this first one is kept
    # as "cold", what a one-case container run pays
    warm = [("ours", predictor, True)] + ([("baseline", plain, baseline_keeps_memory)] if row.baseline else [])
    cold = {}
    for name, pipeline, keep in warm:
        keep_freed_memory(keep)
        start = time.perf_counter()
        pipeline(hu.astype(np.float32))
        sync(device)
        cold[name] = time.perf_counter() - start
    pipelines = [timed_runs(repeat, path, workdir / "ours.nii.gz", predictor, manifest, device,
                            recorded_modules(predictor.models))]  # the predictor's own copies run
    if row.baseline:
        pipelines.append(timed_runs(repeat, path, workdir / "baseline.nii.gz", plain, manifest, device,
                                    recorded_modules(models)))
    runs: list[list[dict]] = [[] for _ in pipelines]
    for _ in range(repeat):
        for pipeline, done, (_, _, keep) in zip(pipelines, runs, warm, strict=True):
            keep_freed_memory(keep)
            done.append(next(pipeline))
    keep_freed_memory(True)
    ours, *rest = [min(done, key=lambda run: run["seconds"]["end_to_end"]) for done in runs]
    flops = runs[0][0]["flops"]
    print(f"  {row.name}: ours {ours['seconds']['end_to_end']:.2f} s "
          f"(runs: {seconds_list(runs[0])}; first, ensemble only: {cold['ours']:.2f})", flush=True)
    result: dict = {
        "row": row.name, "family": row.family, "size": row.size, "device": row.device,
        "precision": compute.precision, "winograd": compute.winograd and compute.precision == "fp32",
        "freed_memory_kept": {"ours": True, "baseline": baseline_keeps_memory},
        "first_ensemble_seconds": cold,
        "network": asdict(manifest.network), "input_mode": manifest.input_mode, "trained_weights": trained,
        "case": {"slices": row.slices, "field": row.field, "folds": row.folds},
        "seconds": ours["seconds"], "memory_mb": ours["memory"], "gflop": flops / 1e9,
        "achieved_tflops": flops / ours["seconds"]["ensemble"] / 1e12,
        "head_box_fraction": float(np.prod([s.stop - s.start for s in head_box(hu)]) / hu.size),
        "mask_fraction": float(ours["mask"].mean()),
    }
    if row.reduced and row.field == 512 and row.spec.slice_wise:  # 2D work is linear in both
        scale = FULL_SLICES / row.slices
        other = result["seconds"]["end_to_end"] - result["seconds"]["ensemble"]
        result["seconds_per_case"] = other * scale + result["seconds"]["ensemble"] * scale * FULL_FOLDS / row.folds
        result["extrapolated"] = True
    elif not row.reduced:
        result["seconds_per_case"], result["extrapolated"] = result["seconds"]["end_to_end"], False
    elif (row.slices, row.field) == (FULL_SLICES, 512):  # 3D on fewer folds: linear in folds only
        other = result["seconds"]["end_to_end"] - result["seconds"]["ensemble"]
        result["seconds_per_case"] = other + result["seconds"]["ensemble"] * FULL_FOLDS / row.folds
        result["extrapolated"] = True
    result["runs_end_to_end"] = [r["seconds"]["end_to_end"] for r in runs[0]]
    if predictor.recheck_margin:
        result["recheck"] = {"margin": predictor.recheck_margin,  # one more pass, untimed, to count
                             "slices": predictor.predict(hu.astype(np.float32)).rechecked,
                             "of": len(predictor.slice_plan(hu.astype(np.float32)))}
    if row.baseline:
        theirs = rest[0]
        print(f"  {row.name}: baseline {theirs['seconds']['end_to_end']:.2f} s "
              f"(runs: {seconds_list(runs[1])}; first, ensemble only: {cold['baseline']:.2f})", flush=True)
        result["baseline"] = {"seconds": theirs["seconds"], "memory_mb": theirs["memory"],
                              "gflop": runs[1][0]["flops"] / 1e9,
                              "runs_end_to_end": [r["seconds"]["end_to_end"] for r in runs[1]]}
        result["speedup"] = theirs["seconds"]["end_to_end"] / ours["seconds"]["end_to_end"]
        result["speedup_ensemble"] = theirs["seconds"]["ensemble"] / ours["seconds"]["ensemble"]
        head = head_mask(hu)  # the predictor leaves the air out by design: a random network's "blood" there
        result["dice_vs_baseline"] = dice(ours["mask"], theirs["mask"])
        result["dice_vs_baseline_head"] = dice(ours["mask"][head], theirs["mask"][head])
        result["max_abs_dprob"] = float(np.abs(ours["prob"] - theirs["prob"])[head].max())
    if row.baseline and not (quick and not row.spec.slice_wise):  # plain 3D SWI equality is a unit test
        direct = EnsemblePredictor(models, manifest, device, mirror=False, winograd=False,
                                   path=choose_path(device, "fp32"))
        same = same_input_reference(direct, hu.astype(np.float32))
        same_mask = postprocess(same, to_image(hu).GetSpacing()[::-1], manifest.threshold, manifest.postprocess,
                                hu=hu.astype(np.float32)).mask
        result["dice_same_input"] = dice(ours["mask"], same_mask)
        result["max_abs_dprob_same_input"] = float(np.abs(ours["prob"] - same).max())
    return result


def recheck_label(result: dict) -> str:
    """`` + fp32 recheck k/n`` for a row whose near-threshold slices were computed again in fp32."""
    recheck = result.get("recheck")
    return f" + fp32 recheck {recheck['slices']}/{recheck['of']} (±{recheck['margin']})" if recheck else ""


def table(results: list[dict], peaks: dict[str, dict]) -> str:
    """A Markdown table of the rows (the README's copy comes from here)."""
    head = ("| row | case (slices × folds, field) | ours s (read / ensemble / post / write) | baseline s | speedup "
            "| s per 32-slice 5-fold case | GFLOP (baseline) | TFLOP/s | of peak | peak MB "
            "| Dice vs baseline: volume / head (same input) | max abs Δp on the head (same input) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        s, b = r["seconds"], r.get("baseline")
        memory = r["memory_mb"].get("peak_cuda_mb", r["memory_mb"]["peak_rss_mb"])
        per_case = r.get("seconds_per_case")
        lines.append(" | ".join([
            f"| {r['row']}{' (trained)' if r['trained_weights'] else ''} {r['precision']}{recheck_label(r)}",
            f"{r['case']['slices']} × {r['case']['folds']}, {r['case']['field']}²",
            f"{s['end_to_end']:.2f} ({s['read']:.2f} / {s['ensemble']:.2f} / {s['postprocess']:.2f}"
            f" / {s['write']:.2f})",
            f"{b['seconds']['end_to_end']:.2f}" if b else "–",
            f"{r['speedup']:.2f}×" if b else "–",
            "–" if per_case is None else f"{per_case:.2f}{' (extrap.)' if r['extrapolated'] else ''}",
            f"{r['gflop']:.0f}" + (f" ({b['gflop']:.0f})" if b else ""),
            f"{r['achieved_tflops']:.3f}", f"{r['fraction_of_peak']:.2f}", f"{memory:.0f}",
            f"{r['dice_vs_baseline']:.4f} / {r['dice_vs_baseline_head']:.4f} "
            f"({r.get('dice_same_input', float('nan')):.4f})" if b else "–",
            f"{r['max_abs_dprob']:.1e} ({r.get('max_abs_dprob_same_input', float('nan')):.1e}) |" if b else "– |"]))
    notes = [f"peak {key}: {p['tflops']:.3f} TFLOP/s ({p['how']})" for key, p in peaks.items()]
    return "\n".join([*lines, "", *notes])


def summary(results: list[dict]) -> str:
    """The last line: the full-size 2D ensemble on the fastest device present."""
    rows = [r for r in results if family(r["family"]).slice_wise and r["size"] == "full" and "baseline" in r]
    row = next((r for r in rows if r["device"] == "cuda"), rows[0] if rows else None)
    if row is None:
        return f"speedup=nan fraction_of_peak=nan seconds_per_case=nan peak_mb=nan cpu={cpu_model().replace(' ', '_')}"
    memory = row["memory_mb"].get("peak_cuda_mb", row["memory_mb"]["peak_rss_mb"])
    return (f"speedup={row['speedup']:.2f} fraction_of_peak={row['fraction_of_peak']:.2f} "
            f"seconds_per_case={row.get('seconds_per_case', float('nan')):.2f} peak_mb={memory:.0f} "
            f"cpu={cpu_model().replace(' ', '_')}")


def peak_kinds(device: str) -> list[tuple[str, torch.dtype]]:
    """The matmul peaks to measure on a device: fp32, and fp16 on CUDA or bf16 on a native-bf16 CPU."""
    if device == "cuda":
        return [("cuda-fp16", torch.float16), ("cuda-fp32", torch.float32)]
    return [("cpu-fp32", torch.float32)] + ([("cpu-bf16", torch.bfloat16)] if cpu_has_native_bf16() else [])


def peak_key(result: dict) -> str:
    """The peak a row's fraction is taken against: its device and the precision its path computes in."""
    reduced = {"cuda": "fp16", "cpu": "bf16"}[result["device"]]
    return f"{result['device']}-{reduced if result['precision'] == reduced else 'fp32'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CPU rows on slimmer cases (a few minutes on 2 cores)")
    parser.add_argument("--device", choices=("all", "cpu", "cuda"), default="all")
    parser.add_argument("--json", type=Path, default=Path(tempfile.gettempdir()) / "ich_bench.json")
    parser.add_argument("--repeat", type=int, default=1,
                        help="time ours and the baseline this many times, alternating, and keep each one's fastest "
                             "(a shared machine's contention only adds time)")
    parser.add_argument("--precision", choices=("auto", "fp32"), default="auto",
                        help="ours: the CPU's fastest path (bf16 where native) or fp32; the baseline is fp32")
    parser.add_argument("--slices", type=int, default=None, help="override every row's slice count (a tiny run)")
    parser.add_argument("--tiny", action="store_true",
                        help="a 128² row of each family, short peak measurements: that the benchmark runs (a CI test); "
                             "its figures are not worth quoting")
    parser.add_argument("--full-weights", type=Path, default=None,
                        help="a seed-size (32-filter) weights folder for the full-size rows, instead of calibrated "
                             "random networks")
    parser.add_argument("--cascade-weights", type=Path, default=None,
                        help="a trained 3D cascade weights folder for the 3D shipped-size rows (no cascade is "
                             "shipped), instead of calibrated random networks")
    parser.add_argument("--baseline-keeps-memory", action="store_true",
                        help="run the baseline with freed memory kept in the process too, as ours runs (default: "
                             "glibc's defaults, as a user's script runs)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for PyTorch (default: its own choice, one per core)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    if not devices:
        print("error: --device cuda was asked for but no CUDA device is available", file=sys.stderr)
        return 2
    given = {(name, size): folder for name, size, folder in ((SEGRESNET2D.name, "full", args.full_weights),
                                                            (CASCADE3D.name, "shipped", args.cascade_weights))
             if folder is not None}
    for (name, _), folder in given.items():
        try:
            found = load_manifest(folder).family  # another family's folder would silently give random rows
        except WeightsError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if found != name:
            print(f"error: {folder}: a {found} weights folder, where {name} weights were asked for", file=sys.stderr)
            return 2
    flags = cpu_flags()
    print(f"cpu: {cpu_model()}; flags: {' '.join(f for f in ISA_FLAGS if f in flags) or 'none of ' + str(ISA_FLAGS)}",
          flush=True)
    peaks, results = {}, []
    with tempfile.TemporaryDirectory(prefix="ich-bench-") as tmp:
        for device in devices:
            for key, dtype in peak_kinds(device):
                flops, how = matmul_peak(torch.device(device), seconds=0.5 if args.tiny else 3.0, dtype=dtype)
                peaks[key] = {"tflops": flops / 1e12, "how": how}
                print(f"{key}: matmul peak {flops / 1e12:.3f} TFLOP/s ({how}), {torch.get_num_threads()} threads",
                      flush=True)
        for row in plan(args.quick, devices, args.tiny):
            if args.slices:
                row.slices = args.slices
            start = time.perf_counter()
            result = run_row(row, Path(tmp), args.quick, max(args.repeat, 1), args.precision, given,
                             args.baseline_keeps_memory)
            results.append(result)
            key = peak_key(result)
            flops, _ = matmul_peak(torch.device(row.device), seconds=0.5 if args.tiny else 1.0,
                                   dtype=dict(peak_kinds(row.device))[key])
            peaks[key]["tflops"] = max(peaks[key]["tflops"], flops / 1e12)  # a busy machine's peak varies
            print(f"{row.name} ({row.slices} slices × {row.folds} folds, {row.field}²): "
                  f"{result['seconds']['end_to_end']:.2f} s, speedup {result.get('speedup', float('nan')):.2f}×, "
                  f"Dice {result.get('dice_vs_baseline', float('nan')):.4f} [{time.perf_counter() - start:.0f} s]",
                  flush=True)
    for result in results:  # fraction of the best peak measured in the run, in the row's precision
        result["fraction_of_peak"] = result["achieved_tflops"] / peaks[peak_key(result)]["tflops"]
    report = {"quick": args.quick, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "baseline_keeps_memory": args.baseline_keeps_memory,
              "cpu": cpu_model(), "cpu_flags": sorted(f for f in ISA_FLAGS if f in flags),
              "peaks": peaks, "rows": results, "summary": summary(results)}
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(table(results, peaks))
    print(f"json: {args.json}")
    print(report["summary"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
