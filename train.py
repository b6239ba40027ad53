"""Train the segmentation models with 5-fold cross-validation, and export them as a weights folder.

    python train.py fit --data DATASET --out RUN [--family segresnet2d|cascade3d] [--fold all|K] ...
    python train.py export --run RUN --weights weights/
    python train.py retune --weights weights/ --tune-on LABELLED --out NEW_WEIGHTS
    python train.py merge --weights A/ B/ --out NEW_WEIGHTS [--description KEY=VALUE ...]

``DATASET`` is in INSTANCE layout (``train/data/NNN.nii.gz`` + ``train/label/NNN.nii.gz``). Several
GPUs or nodes: launch ``fit`` with ``torchrun`` (docs/training.md has the exact commands).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from model.allocator import keep_freed_memory
from model.families import CASCADE3D, FAMILIES, SEGRESNET2D
from model.io import CaseError
from model.networks import SegResNet2DNetwork
from model.postprocess import FLOOR_SHARE
from model.settings import PatchInference
from model.spacing import SLAB_SHARE
from model.weights import Manifest, WeightsError
from model.windowing import CHANNELS
from training.distributed import setup, teardown
from training.export import TUNING_TABLES, export_run, retune_weights
from training.families import TRAINING
from training.folds import SLAB_MM, run_training
from training.losses import LOSSES
from training.merge import merge_weights


def _fit_parser(sub: argparse._SubParsersAction) -> None:
    fit = sub.add_parser("fit", help="train one fold or all folds")
    fit.add_argument("--data", type=Path, required=True, help="INSTANCE-layout dataset folder (with train/)")
    fit.add_argument("--out", type=Path, required=True, help="run folder: config, split, cache, checkpoints, logs")
    fit.add_argument("--family", choices=tuple(FAMILIES), default=SEGRESNET2D.name)
    fit.add_argument("--input-mode", choices=sorted(CHANNELS), default="windows3")
    fit.add_argument("--stage", type=int, choices=(1, 2), default=1, help="cascade3d: which stage to train")
    fit.add_argument("--fold", default="all", help="'all' or one fold index")
    fit.add_argument("--folds", type=int, default=5)
    fit.add_argument("--splits", type=Path, default=None,
                     help="use this splits.json ([{'train': [...], 'val': [...]}, ...]) instead of making one")
    fit.add_argument("--split-seed", type=int, default=0, help="seed of the split made when none is given")
    fit.add_argument("--epochs", type=int, default=100)
    fit.add_argument("--steps-per-epoch", type=int, default=250)
    two, three = TRAINING[SEGRESNET2D.name], TRAINING[CASCADE3D.name]
    fit.add_argument("--batch-size", type=int, default=None,
                     help=f"global batch over all processes (default {two.batch_size} for 2D, "
                          f"{three.batch_size} for 3D)")
    fit.add_argument("--lr", type=float, default=None,
                     help=f"default {two.lr:g} ({two.optimizer}, 2D) or {three.lr:g} ({three.optimizer}, 3D)")
    fit.add_argument("--weight-decay", type=float, default=None,
                     help=f"default {two.weight_decay:g} (2D) or {three.weight_decay:g} (3D)")
    fit.add_argument("--crop", type=int, nargs=2, default=(384, 384), help="2D training crop (y x)")
    fit.add_argument("--spacing", type=float, nargs="+", default=None,
                     help="train (and predict) at this spacing in mm: one in-plane value, or z y x for the 3D "
                          "cascade (default: each case's own)")
    fit.add_argument("--slab-mm", type=float, default=SLAB_MM,
                     help=f"the training cases' usual slice thickness (mm): the predictor averages slices under "
                          f"{SLAB_SHARE} of it to it (default %(default)s, the generator's and INSTANCE's; 0: never)")
    fit.add_argument("--patch", type=int, nargs=3, default=PatchInference.roi_size,
                     help="3D training patch (z y x), also the sliding window's at inference")
    fit.add_argument("--init-filters", type=int, default=None,
                     help=f"default {SegResNet2DNetwork.init_filters} (the seeds' size)")
    fit.add_argument("--blocks-down", type=int, nargs="+", default=None, help="2D: ResNet blocks per level")
    fit.add_argument("--dsdepth", type=int, default=None,
                     help=f"2D: deep-supervision outputs (default {SegResNet2DNetwork.dsdepth})")
    fit.add_argument("--norm", choices=("batch", "instance"), default=None,
                     help="2D: normalisation (default batch: fixed statistics at inference, so cropping to the "
                          "head does not change the result; docs/speed.md)")
    fit.add_argument("--no-augment", action="store_true", help="crops only, no flips/affine/intensity changes")
    fit.add_argument("--offset-hu", type=float, default=0.0,
                     help="add a whole-sample HU offset, uniform in +-this, to half the samples before windowing "
                          "(another scanner's calibration; 0: none)")
    fit.add_argument("--scanner-augment", action="store_true",
                     help="also nnU-Net's gamma, sharpening and simulated low resolution (other heads and scanners)")
    fit.add_argument("--balance-lesions", action="store_true",
                     help="2D: draw blood slices bleed by bleed, so small bleeds are seen as often as large ones")
    fit.add_argument("--loss", choices=LOSSES, default="dice_bce",
                     help="dice_bce: the seeds' batch Dice + BCE; blob: plus a Dice per bleed, so small bleeds "
                          "weigh as much as large ones (training/losses.py)")
    fit.add_argument("--average-from", type=int, default=0, metavar="EPOCH",
                     help="hold the learning rate constant and average the weights after every step from this "
                          "epoch on; the average is validated and saved (SWA / SWAD; 0: off, cosine schedule)")
    fit.add_argument("--workers", type=int, default=2, help="data-loader worker processes per rank")
    fit.add_argument("--threads", type=int, default=None, help="CPU threads per process (torch.set_num_threads)")
    fit.add_argument("--validate-every", type=int, default=1, help="validate every N epochs (and the last)")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--fp32", action="store_true",
                     help="CPU: no bf16 autocast even where the CPU has native bf16 (AMX / AVX512-BF16)")
    fit.add_argument("--resume", action="store_true", help="continue each fold from its last.pt")
    fit.add_argument("--init-from", type=Path, default=None,
                     help="warm restart: begin each fold from this earlier run's best.pt of the same fold (give "
                          "that run's splits.json with --splits), with a new optimiser and schedule")
    fit.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")


def _export_parser(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser("export", help="fold checkpoints → weights folder with manifest and hashes")
    export.add_argument("--run", type=Path, required=True, help="run folder of `fit`")
    export.add_argument("--weights", type=Path, required=True, help="weights folder to write")
    export.add_argument("--checkpoint", choices=("best", "last"), default="best")
    export.add_argument("--folds", type=int, nargs="+", default=None,
                        help="export only these cross-validation folds (default: all of the run's)")
    export.add_argument("--threshold", type=float, default=None,
                        help="of the mean fold probability (default: 0.5–0.8, chosen out-of-fold)")
    export.add_argument("--min-component-ml", type=float, default=None,
                        help="post-processing: drop smaller components (default: chosen out-of-fold)")
    export.add_argument("--intracranial-share", type=float, default=None,
                        help="post-processing: drop components with less of their voxels inside the skull "
                             "(default: 0 or 0.5, chosen out-of-fold)")
    export.add_argument("--keep-peak", type=float, default=None,
                        help="post-processing: keep a smaller component whose peak probability reaches this "
                             "(default: 0.9–0.99 or off, chosen out-of-fold)")
    export.add_argument("--min-peak", type=float, default=None,
                        help="post-processing: drop a component whose peak probability stays under this "
                             "(default: 0.7–0.95 or off, chosen out-of-fold)")
    export.add_argument("--max-floor-share", type=float, default=FLOOR_SHARE,
                        help="post-processing: drop a component with more of its voxels directly above bone "
                             f"(the skull's floor in a thick slice; default {FLOOR_SHARE}, set by hand, "
                             "not tuned; 1: off)")
    export.add_argument("--crop-margin", type=int, default=None,
                        help="2D: pixels kept around each slice's head (default: chosen out-of-fold)")
    export.add_argument("--slab-mm", type=float, default=None,
                        help=f"the slab (mm) that slices under {SLAB_SHARE} of it are averaged to before prediction "
                             "(default: the run's; 0: never)")
    export.add_argument("--no-brain-hu", action="store_true",
                        help="do not measure the training heads' brain HU levels (scans are then never shifted)")
    export.add_argument("--mirror", action="store_true",
                        help="left-right mirror test-time augmentation in the manifest (tuned with it)")
    export.add_argument("--no-never-empty", action="store_true", help="allow empty masks (screening use)")
    export.add_argument("--measure-bf16", action="store_true",
                        help="measure bf16 against fp32 masks on a CPU without native bf16 too (emulated, 10-15x "
                             "slower), so the manifest can allow bf16 where it is native")
    export.add_argument("--tune-on", type=Path, default=None,
                        help="choose the post-processing on this INSTANCE-layout folder's labelled cases (train/), "
                             "predicted by the exported folds' ensemble, instead of out of fold")
    export.add_argument("--measure-fp16", action="store_true",
                        help="measure CUDA's fp16 autocast against fp32 masks (emulated on the CPU, slow), so the "
                             "manifest can allow fp16 on CUDA (default: fp32 there)")
    export.add_argument("--description", action="append", default=[], metavar="KEY=VALUE",
                        help="extra manifest description field (repeatable)")


def _retune_parser(sub: argparse._SubParsersAction) -> None:
    retune = sub.add_parser("retune", help="a weights folder's post-processing chosen again on a labelled set "
                                           "(no training run needed; fold files copied unchanged)")
    retune.add_argument("--weights", type=Path, required=True, help="weights folder to start from")
    retune.add_argument("--tune-on", type=Path, required=True,
                        help="INSTANCE-layout folder whose labelled cases (train/) the ensemble predicts")
    retune.add_argument("--out", type=Path, required=True, help="weights folder to write")
    retune.add_argument("--cache", type=Path, default=None,
                        help="where the resampled cases are kept between runs (default: a temporary folder)")
    retune.add_argument("--measure-bf16", action="store_true",
                        help="measure bf16 against fp32 masks on a CPU without native bf16 too (emulated)")
    retune.add_argument("--measure-fp16", action="store_true",
                        help="measure CUDA's fp16 autocast against fp32 masks (emulated on the CPU)")


def _merge_parser(sub: argparse._SubParsersAction) -> None:
    merge = sub.add_parser("merge", help="one ensemble from the folds of several weights folders (settings from "
                                         "the first; stored in float16 unless --float32)")
    merge.add_argument("--weights", type=Path, nargs="+", required=True, help="weights folders, the first's settings")
    merge.add_argument("--out", type=Path, required=True, help="weights folder to write")
    merge.add_argument("--float32", action="store_true", help="store the folds in float32 (twice the bytes)")
    merge.add_argument("--description", nargs="*", default=[], metavar="KEY=VALUE",
                       help="extra fields for the manifest's description")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _fit_parser(sub)
    _export_parser(sub)
    _retune_parser(sub)
    _merge_parser(sub)
    return parser.parse_args(argv)


def fit(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    info = setup(args.device)
    try:
        results = run_training(args, info)
    finally:
        teardown()
    if info.is_main:
        for result in results:
            print(f"done: {args.epochs} epoch(s), best validation Dice {result['best_dice']:.4f}")
    return 0


def _description(items: list[str]) -> dict[str, str]:
    """``--description KEY=VALUE`` items as a dict."""
    description = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--description {item!r}: expected KEY=VALUE")
        description[key] = value
    return description


def export(args: argparse.Namespace) -> int:
    manifest = export_run(args.run, args.weights, args.checkpoint, args.threshold, args.min_component_ml,
                          not args.no_never_empty, _description(args.description), crop_margin=args.crop_margin,
                          folds=args.folds,
                          intracranial_share=args.intracranial_share, keep_peak=args.keep_peak, min_peak=args.min_peak,
                          mirror=args.mirror, measure_bf16=args.measure_bf16, measure_fp16=args.measure_fp16,
                          tune_on=args.tune_on, slab_mm=args.slab_mm,
                          brain_hu=not args.no_brain_hu, max_floor_share=args.max_floor_share)
    _report(args.weights, manifest)
    return 0


def retune(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="ich-retune-") as scratch:
        manifest = retune_weights(args.weights, args.out, args.tune_on, args.cache or Path(scratch),
                                  args.measure_bf16, args.measure_fp16)
    _report(args.out, manifest)
    return 0


def merge(args: argparse.Namespace) -> int:
    manifest = merge_weights(args.weights, args.out, half=not args.float32, extra=_description(args.description))
    _report(args.out, manifest)
    return 0


def _report(weights: Path, manifest: Manifest) -> None:
    """What was written: size, the chosen post-processing and the tuning tables."""
    total = sum((weights / f.file).stat().st_size for f in manifest.folds)
    print(f"wrote {weights}: {len(manifest.folds)} fold(s), {total / 1e6:.1f} MB, threshold {manifest.threshold}, "
          f"min_component_ml {manifest.postprocess.min_component_ml} "
          f"(one slice: {manifest.postprocess.min_component_for(1)}), keep_peak {manifest.postprocess.keep_peak}, "
          f"min_peak {manifest.postprocess.min_peak}, "
          f"intracranial_share "
          f"{manifest.postprocess.intracranial_share}, crop_margin "
          f"{manifest.inference.crop_margin if manifest.spec.slice_wise else '-'}")
    print(json.dumps({k: manifest.description[k] for k in TUNING_TABLES if k in manifest.description}))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    keep_freed_memory()  # a training step of 8 × 192² on the 2-core EPYC: 2.2–2.9 → 1.2–1.4 s (model.allocator)
    try:
        code = {"fit": fit, "export": export, "retune": retune, "merge": merge}[args.command](args)
    except (CaseError, FileNotFoundError, ValueError, WeightsError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(f"{args.command}: {time.perf_counter() - started:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
