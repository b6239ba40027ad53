"""CPU against CUDA masks of the same cases, and fp32 against the dispatched CPU precision.

    python3 scripts/compare_devices.py --input samples/input --weights weights [--out devices.json]

Each case goes through the predictor on every path this machine has: the CPU in fp32, the CPU on
the path :mod:`model.compute` chooses (bf16 where the CPU has it and the manifest allows it), and
CUDA when present: as the manifest allows (fp16 or fp32) and in fp16 regardless. Masks are compared
with the fp32 CPU masks: Dice and volume change. The
rule for a faster path is the same everywhere (issue 17): Dice ≥ 0.99 and volume within 1 %.
Exit status 1 when a path breaks the rule on any case.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.compute import choose_path, path_for_weights
from model.io import IMAGE_SUFFIXES, read_image, to_canonical
from model.postprocess import postprocess
from model.predictor import EnsemblePredictor
from model.weights import load_manifest, load_models

MIN_DICE, MAX_VOLUME_CHANGE = 0.99, 0.01


def masks_by_path(path: Path, weights: Path) -> dict[str, np.ndarray]:
    import SimpleITK as sitk

    manifest = load_manifest(weights)
    image = to_canonical(read_image(path))
    hu, spacing = sitk.GetArrayFromImage(image).astype(np.float32), image.GetSpacing()[::-1]
    cpu = torch.device("cpu")
    paths = {"cpu-fp32": (cpu, choose_path(cpu, "fp32")),
             "cpu-dispatched": (cpu, path_for_weights(cpu, "auto", manifest.inference))}
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        paths["cuda"] = (cuda, path_for_weights(cuda, "auto", manifest.inference))
        paths["cuda-fp16"] = (cuda, choose_path(cuda, "auto", cuda_precision="auto"))  # the export's emulated
        # fp16 measurement, checked on cuDNN's real one
    masks = {}
    for name, (device, compute) in paths.items():
        predictor = EnsemblePredictor(load_models(weights, manifest, device), manifest, device, path=compute)
        prob = predictor(hu, spacing)
        masks[f"{name} ({compute.precision})"] = postprocess(prob, spacing, manifest.threshold,
                                                             manifest.postprocess, hu=hu).mask > 0
    return masks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    rows, ok = [], True
    for path in sorted(p for p in args.input.iterdir() if p.name.lower().endswith(IMAGE_SUFFIXES)):
        masks = masks_by_path(path, args.weights)
        (ref_name, reference), *others = masks.items()
        for name, mask in others:
            total = int(reference.sum() + mask.sum())
            dice = 1.0 if total == 0 else 2 * int((reference & mask).sum()) / total
            change = abs(int(mask.sum()) - int(reference.sum())) / max(int(reference.sum()), 1)
            passed = dice >= MIN_DICE and change <= MAX_VOLUME_CHANGE
            ok &= passed
            rows.append({"case": path.name, "path": name, "against": ref_name, "dice": round(dice, 5),
                         "volume_change": round(change, 5), "passed": passed})
            print(f"{path.name}: {name} vs {ref_name}: Dice {dice:.4f}, volume change {100 * change:.2f} %"
                  f"{'' if passed else '  FAILS the rule'}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
