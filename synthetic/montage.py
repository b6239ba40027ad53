"""``python -m synthetic.montage DATASET_DIR --out docs/montage.png [--cases K]``.

For each case, the axial slice with the most labelled blood (the middle slice for a negative) in the
brain window [0, 80] HU, with the label outlined in red; a small PNG for the README.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import SimpleITK as sitk

from model.io import CaseError, case_name, read_image, to_canonical


def find_pairs(dataset: Path) -> list[tuple[Path, Path | None]]:
    """(CT, label) pairs under ``train/`` and ``evaluation/`` (or a flat folder of CTs)."""
    pairs = []
    for split in ("train", "evaluation"):
        for ct in sorted((dataset / split / "data").glob("*.nii.gz")):
            label = dataset / split / "label" / ct.name
            pairs.append((ct, label if label.is_file() else None))
    if not pairs:
        pairs = [(ct, None) for ct in sorted(dataset.glob("*.nii.gz"))]
    return pairs


def render(pairs: list[tuple[Path, Path | None]], out: Path, columns: int = 4, tile_inches: float = 2.2) -> None:
    rows = int(np.ceil(len(pairs) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * tile_inches, rows * tile_inches), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (ct_path, label_path) in zip(axes.ravel(), pairs, strict=False):
        ct = sitk.GetArrayFromImage(to_canonical(read_image(ct_path))).astype(np.float32)
        label = (sitk.GetArrayFromImage(to_canonical(read_image(label_path))) if label_path
                 else np.zeros(ct.shape, np.uint8))
        counts = label.reshape(label.shape[0], -1).sum(axis=1)
        z = int(np.argmax(counts)) if counts.any() else ct.shape[0] // 2
        ax.imshow(ct[z], cmap="gray", vmin=0, vmax=80, interpolation="lanczos")
        if counts[z]:
            ax.contour(label[z], levels=[0.5], colors="red", linewidths=0.6)
        ax.set_title(f"{case_name(ct_path)}  z={z}/{ct.shape[0]}", fontsize=7)
    fig.tight_layout(pad=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m synthetic.montage", description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="INSTANCE-layout folder (train/, evaluation/) or a flat folder")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--cases", type=int, default=8, help="how many cases to show")
    args = parser.parse_args(argv)
    pairs = find_pairs(args.dataset)[: args.cases]
    if not pairs:
        print(f"error: {args.dataset}: no .nii.gz cases found", file=sys.stderr)
        return 2
    try:
        render(pairs, args.out)
    except CaseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({len(pairs)} cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
