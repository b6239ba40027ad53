"""Segment intracranial haemorrhage in every head CT of a folder (the container's entry point).

One case: read → canonical orientation → window and predict (folds averaged) → threshold and
clean → back to the input's geometry → write atomically → record in results.json.

Layouts: a flat folder of CTs (INSTANCE: ``/input/<name>.nii.gz`` → ``/predict/<name>.nii.gz``; DICOM
series anywhere under it → ``<series>.nii.gz`` plus a DICOM SEG ``<series>.seg.dcm``) or
grand-challenge's (``/input/images/<slug>/<uuid>.mha`` → ``/output/images/<output-slug>/<uuid>.mha``).
Exit status 0 only when every case succeeded; the last line on stderr is the one-line reason.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import SimpleITK as sitk

from model.allocator import keep_freed_memory
from model.anatomy import skull_extent_mm
from model.atomic import atomic_path
from model.compute import PRECISIONS, path_for_weights
from model.console import Progress, native_stderr_silenced
from model.device import DeviceError, select_device
from model.io import CaseError, LoadedCase
from model.layouts import DEFAULT_OUTPUT_SLUG, Case, discover_cases, load_case
from model.outputs import QcRequest, write_case_outputs
from model.postprocess import postprocess
from model.predictor import EnsemblePredictor
from model.review import review
from model.spacing import voxel_ml
from model.weights import Manifest, WeightsError, load_manifest, load_models

APP_DIR = Path(__file__).resolve().parent
PLATFORM_MODEL_DIR = Path("/opt/ml/model")


def default_output() -> Path:
    """``/output`` (grand-challenge), or ``/predict`` when that is the folder mounted (INSTANCE)."""
    if not Path("/output").is_dir() and Path("/predict").is_dir():
        return Path("/predict")
    return Path("/output")


def default_weights() -> Path:
    """A model uploaded to grand-challenge (``/opt/ml/model``) wins over the weights built in."""
    if (PLATFORM_MODEL_DIR / "manifest.json").is_file():
        return PLATFORM_MODEL_DIR
    return APP_DIR / "weights"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=Path("/input"), help="folder of CTs (default /input)")
    parser.add_argument("--output", type=Path, default=None,
                        help="folder for masks (default /output, or /predict when only that exists)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="weights folder with manifest.json (default /opt/ml/model if it holds one, "
                             "else the built-in weights/)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--output-slug", default=DEFAULT_OUTPUT_SLUG,
                        help=f"grand-challenge output socket folder under images/ (default {DEFAULT_OUTPUT_SLUG})")
    parser.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=None,
                        help="left-right mirror test-time augmentation (default: the manifest's setting)")
    parser.add_argument("--batch-size", type=int, default=None, help="slices or patches per network call")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="CPU: auto takes bf16 where the processor has it natively and the weights allow it "
                             "(measured equal to fp32 at export), else fp32; fp32 forces fp32")
    parser.add_argument("--qc", action="store_true",
                        help="also write a PNG per case (slices with most blood, mask outlined) to <output>/qc/")
    parser.add_argument("--debug", action="store_true",
                        help="print tracebacks of failed cases, and let native libraries (ITK, GDCM) print")
    return parser.parse_args(argv)


def segment(case: Case, loaded: LoadedCase, predictor: EnsemblePredictor, manifest: Manifest,
            qc_dir: Path | None = None) -> dict:
    """Run one case end to end and return its results.json record."""
    hu, spacing_zyx = loaded.hu, loaded.spacing_zyx
    prediction = predictor.predict_with_fallback(hu, spacing_zyx,
                                                 say=lambda message: print(f"{case.name}: {message}", flush=True))
    cleaned = postprocess(prediction.prob, spacing_zyx, manifest.threshold, manifest.postprocess, hu=hu)
    voxels = int(cleaned.mask.sum())
    volume_ml = round(voxels * voxel_ml(spacing_zyx), 6)
    qc = QcRequest(qc_dir / f"{case.name}.png", hu, cleaned.mask, spacing_zyx,
                   f"{case.name}: {volume_ml:.2f} mL haemorrhage") if qc_dir else None
    files = write_case_outputs(case, loaded.mask_image(cleaned.mask), manifest, qc)
    return {"voxels": voxels, "volume_ml": volume_ml, "fallback": cleaned.fallback, **files,
            "fp32_rechecked_slices": prediction.rechecked, "thin_slices_averaged_to_mm": prediction.slab_mm,
            "hu_shift": prediction.hu_shift,
            "slice_mm_assumed": loaded.slice_mm_assumed, "gantry_tilt_deg": loaded.gantry_tilt_deg,
            "slice_spacings_mm": loaded.slice_spacings_mm,
            **review(prediction, manifest.inference, skull_extent_mm(hu, spacing_zyx))}


def check_writable(folder: Path) -> None:
    """Fail before the first case, not after the slowest one, when masks cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise CaseError(f"{folder}: output folder is not writable ({err.strerror or err})") from None


def write_json_atomic(data: dict, path: Path) -> None:
    """Temporary name, then rename; removed if interrupted in between (SIGTERM while writing)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if isinstance(err, CaseError) else f"{type(err).__name__}: {text}"[:300]


def run(args: argparse.Namespace) -> int:
    output = args.output or default_output()
    weights = args.weights or default_weights()
    manifest = load_manifest(weights)
    device = select_device(args.device)
    path = path_for_weights(device, args.precision, manifest.inference)
    kept = keep_freed_memory()  # no page faults for every new activation map (model.allocator)
    predictor = EnsemblePredictor(load_models(weights, manifest, device), manifest, device,
                                  mirror=args.mirror, batch_size=args.batch_size, path=path)
    if not args.input.is_dir():
        raise CaseError(f"{args.input}: input folder does not exist")
    cases = discover_cases(args.input, output, args.output_slug)
    if not cases:
        raise CaseError(f"{args.input}: no CT images found (.nii.gz, .nii, .mha, .nrrd, DICOM series; "
                        "or images/<slug>/*.mha)")
    check_writable(output)
    print(f"{len(cases)} case(s), {manifest.family} × {len(manifest.folds)} fold(s) on {device}, "
          f"weights {weights}", flush=True)
    recheck = predictor.recheck_margin
    print(f"compute: {path.processor}: {path.precision} ({path.reason})"
          + (f"; slices within {recheck} of the threshold computed again in fp32" if recheck else "")
          + ("; freed memory kept in the process" if kept else ""), flush=True)

    records: list[dict] = []
    summary = {"device": str(device), "weights": str(weights), "family": manifest.family,
               "folds": len(manifest.folds),
               "compute": path.record() | {"recheck_margin": recheck, "freed_memory_kept": kept}, "cases": records}
    progress = Progress(len(cases))
    with ThreadPoolExecutor(max_workers=1) as reader:  # reads the next case while this one computes
        pending = reader.submit(load_case, cases[0])
        for index, case in enumerate(cases):
            loaded = pending
            if index + 1 < len(cases):
                pending = reader.submit(load_case, cases[index + 1])
            progress.start(index, case.name)
            start = time.perf_counter()
            record = {"case": case.name, "input": str(case.input_path), "output": str(case.output_path)}
            try:
                record |= {"status": "ok", **segment(case, loaded.result(), predictor, manifest,
                                                     output / "qc" if args.qc else None)}
                found = " (nothing found: never-empty fallback)" if record["fallback"] else ""
                found += f" (no DICOM SEG: {record['dicom_seg_skipped']})" if "dicom_seg_skipped" in record else ""
                progress.say(f"{case.name}: {record['volume_ml']:.2f} mL haemorrhage "
                             f"({record['voxels']} voxels){found} → {case.output_path}")
            except Exception as err:
                if args.debug:
                    traceback.print_exc()
                record |= {"status": "error", "message": one_line(err), "output": None}
                progress.say(f"{case.name}: error: {record['message']}", error=True)
            record["seconds"] = round(time.perf_counter() - start, 3)
            records.append(record)
            try:
                write_json_atomic(summary | {"totals": totals(records, len(cases))}, output / "results.json")
            except OSError as err:
                record |= {"status": "error", "message": f"results.json could not be written ({err.strerror})"}
                progress.say(f"{case.name}: error: {record['message']}", error=True)
            progress.done()
    progress.close()
    failed = [r for r in records if r["status"] != "ok"]
    print(f"results: {output / 'results.json'}", flush=True)
    if failed:
        print(f"{len(failed)} of {len(cases)} case(s) failed; first: {failed[0]['message']}", file=sys.stderr)
        return 1
    return 0


def totals(records: list[dict], expected: int) -> dict:
    ok = [r for r in records if r["status"] == "ok"]
    return {"cases": expected, "done": len(records), "ok": len(ok), "errors": len(records) - len(ok),
            "seconds": round(sum(r["seconds"] for r in records), 3),
            "volume_ml": round(sum(r["volume_ml"] for r in ok), 4)}


class Terminated(BaseException):
    """SIGTERM (docker stop, a platform's time limit) unwinds like Ctrl-C: temporary files are removed.

    A BaseException, so the per-case error handling does not swallow it.
    """


def _terminate(signum: int, _frame: object) -> None:
    raise Terminated(signum)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK warnings would bury the one-line reason
    args = parse_args(argv)
    try:
        with native_stderr_silenced(enabled=not args.debug):  # ITK/GDCM print raw lines from C++
            return run(args)
    except (CaseError, WeightsError, DeviceError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated) as err:
        print("error: interrupted; finished masks were kept, no partial file was left", file=sys.stderr)
        return 143 if isinstance(err, Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())
