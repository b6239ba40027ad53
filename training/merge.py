"""One weights folder from the folds of several (``train.py merge``): an ensemble of two runs.

Two runs trained on different data (here the shipped folds and folds that also saw a second real
brain) are combined at the prediction level: every fold's probability enters the ensemble mean,
as any fold of one run does. Settings (threshold, post-processing, inference) come from the first
folder's manifest, so the merged ensemble is scored as the first was tuned; the network must be the
same. The inputs are verified by hash first (:func:`model.weights.load_manifest`).
"""

from __future__ import annotations

from pathlib import Path

from model.weights import Manifest, WeightsError, load_manifest, read_fold, write_weights


def merge_weights(sources: list[Path], out_dir: Path, half: bool = True, extra: dict | None = None) -> Manifest:
    """Write ``out_dir`` holding every fold of ``sources`` in order, with the first one's settings and
    ``extra`` in its description."""
    if len(sources) < 2:
        raise ValueError("merge needs at least two weights folders")
    manifests = [load_manifest(source) for source in sources]
    data = [manifest.to_dict() for manifest in manifests]
    for source, other in zip(sources[1:], data[1:], strict=True):
        for key in ("family", "input_mode", "network"):
            if other[key] != data[0][key]:
                raise WeightsError(f"{source}: its {key} differs from {sources[0]}'s; cannot merge")
    states = [read_fold(source / fold.file)
              for source, manifest in zip(sources, manifests, strict=True) for fold in manifest.folds]
    description = {"merged_from": {str(source): each["description"]
                                   for source, each in zip(sources, data, strict=True)},
                   "settings_from": str(sources[0]),
                   "stored": "float16" if half else "float32", **(extra or {})}
    return write_weights(out_dir, {**data[0], "description": description}, states, half=half)
