"""Evaluation speed: score N synthetic 512 × 512 × S mask pairs and print the seconds it took.

    python bench/eval_speed.py [--cases 70] [--slices 40] [--workers 2] [--report]

Labels are a few irregular blobs (union of ellipsoids) per case; predictions are the same blobs
shifted and resized a little, with an occasional missed blob and a small false positive far away,
so the surfaces are realistic in size. Files are written as .nii.gz (0.45 × 0.45 × 5 mm) in a
temporary folder, then the scoring (reading included) is timed. Target: 70 cases in < 60 s on 2
cores. The last line is ``seconds=<t> cases=<n> workers=<w> per_case=<t/n>``.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluation.scoring import evaluate_pairs, pair_files, summarise  # noqa: E402

SPACING_XYZ = (0.45, 0.45, 5.0)


def _ellipsoid(volume: np.ndarray, centre: np.ndarray, radii: np.ndarray) -> None:
    """Set the voxels inside an axis-aligned ellipsoid (radii in voxels, array order z, y, x)."""
    low = np.maximum(np.floor(centre - radii).astype(int), 0)
    high = np.minimum(np.ceil(centre + radii).astype(int) + 1, volume.shape)
    if np.any(high <= low):
        return
    grid = np.ogrid[tuple(slice(a, b) for a, b in zip(low, high, strict=True))]
    inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1.0
    volume[tuple(slice(a, b) for a, b in zip(low, high, strict=True))] |= inside


def make_pair(seed: int, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A label and a plausible prediction for it (uint8 0/1, array order z, y, x)."""
    rng = np.random.default_rng(seed)
    label, pred = np.zeros(shape, bool), np.zeros(shape, bool)
    for _ in range(rng.integers(1, 4)):
        centre = rng.uniform((shape[0] * 0.3, 150, 150), (shape[0] * 0.7, 360, 360))
        for _ in range(rng.integers(2, 5)):  # lobes of one irregular bleed
            lobe = centre + rng.normal(0, (1.0, 12, 12))
            radii = rng.uniform((1.5, 10, 10), (4.0, 45, 45))
            _ellipsoid(label, lobe, radii)
            if rng.random() > 0.1:
                _ellipsoid(pred, lobe + rng.normal(0, (0.3, 2, 2)), radii * rng.uniform(0.85, 1.15))
    if rng.random() < 0.5:
        _ellipsoid(pred, rng.uniform((2, 60, 60), (shape[0] - 2, 450, 450)), np.array([1.0, 4, 4]))
    return label.astype(np.uint8), pred.astype(np.uint8)


def _write(array: np.ndarray, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING_XYZ)
    sitk.WriteImage(image, str(path), useCompression=True)


def _write_case(args: tuple[int, tuple[int, int, int], Path]) -> None:
    seed, shape, root = args
    label, pred = make_pair(seed, shape)
    _write(label, root / "labels" / f"{seed:03d}.nii.gz")
    _write(pred, root / "predictions" / f"{seed:03d}.nii.gz")


def _cpu_seconds() -> float:
    """User + system time of this process and its finished children (the scoring pool)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=70)
    parser.add_argument("--slices", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--report", action="store_true", help="also draw each case's picture for report.html")
    args = parser.parse_args()
    shape = (args.slices, 512, 512)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "labels").mkdir()
        (root / "predictions").mkdir()
        start = time.perf_counter()
        with ProcessPoolExecutor(args.workers) as pool:
            list(pool.map(_write_case, [(seed, shape, root) for seed in range(args.cases)]))
        print(f"generated {args.cases} cases of 512 × 512 × {args.slices} in {time.perf_counter() - start:.1f} s",
              flush=True)
        cpu_before = _cpu_seconds()
        start = time.perf_counter()
        pairs, _ = pair_files(root / "predictions", root / "labels")
        results = evaluate_pairs(pairs, args.workers, picture=args.report)
        seconds = time.perf_counter() - start
        cpu = _cpu_seconds() - cpu_before
    summary = summarise(results)
    means = ", ".join(f"{m} {v['mean']}" for m, v in summary["metrics"].items())
    print(f"scored {summary['scored']}/{summary['cases']}: {means}")
    print(f"CPU time of the scoring {cpu:.1f} s (all processes); load average {os.getloadavg()[0]:.1f} "
          "(above the worker count, other work shared the cores)")
    print(f"seconds={seconds:.1f} cases={args.cases} workers={args.workers} per_case={seconds / args.cases:.3f}")


if __name__ == "__main__":
    main()
