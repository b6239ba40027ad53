"""The weights folder: a manifest describing the model, fold checkpoints verified by SHA-256.

``manifest.json`` says everything inference needs (architecture and hyper-parameters, input mode,
threshold, post-processing, inference settings) and lists each fold's file with its hash. Hashes
are checked and the manifest validated before any case runs, so a corrupted or swapped file stops
the job with one clear line instead of producing wrong masks. Checkpoints are plain state dicts
loaded with ``weights_only=True``: no pickle code from a file ever runs.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from model.families import FAMILIES, Family
from model.networks import Cascade3DNetwork, SegResNet2DNetwork
from model.postprocess import PostprocessConfig
from model.settings import Inference, SettingsError, parse
from model.windowing import CHANNELS

MANIFEST = "manifest.json"
KEYS = ("family", "input_mode", "folds", "network", "threshold", "postprocess", "inference", "description")


class WeightsError(Exception):
    """The weights folder cannot be used; the message is one line."""


@dataclass(frozen=True)
class Fold:
    file: str
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What a weights folder holds and how to run it, typed: :meth:`from_dict` is the one parser.

    ``network`` and ``inference`` are the family's settings classes (:mod:`model.families`), with
    their defaults for what the JSON leaves out; ``description`` is free-form provenance.
    """

    family: str
    input_mode: str
    folds: tuple[Fold, ...]
    network: SegResNet2DNetwork | Cascade3DNetwork
    inference: Inference
    threshold: float = 0.5
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    description: dict = field(default_factory=dict)

    @property
    def spec(self) -> Family:
        """The family's registry entry: what differs between the families is asked of it."""
        return FAMILIES[self.family]

    @property
    def in_channels(self) -> int:
        return CHANNELS[self.input_mode]

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        """Validate and type a manifest's JSON; an unknown key anywhere but ``description`` is an error."""
        unknown = sorted(set(data) - set(KEYS))
        if unknown:
            raise WeightsError(f"manifest: unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
        name, mode = data.get("family"), data.get("input_mode")
        if name not in FAMILIES:
            raise WeightsError(f"manifest: family {name!r} is not one of {tuple(FAMILIES)}")
        family = FAMILIES[name]
        if mode not in family.input_modes:
            raise WeightsError(f"manifest: input_mode {mode!r} is not valid for {name}")
        folds = tuple(Fold(str(f["file"]), str(f["sha256"]).lower()) for f in data.get("folds", []))
        if not folds:
            raise WeightsError("manifest: lists no fold checkpoints")
        threshold = float(data.get("threshold", 0.5))
        if not 0.0 < threshold < 1.0:
            raise WeightsError(f"manifest: threshold {threshold} is not inside (0, 1)")
        try:
            return cls(family=name, input_mode=mode, folds=folds, network=family.parse_network(data.get("network")),
                       inference=family.parse_inference(data.get("inference")), threshold=threshold,
                       postprocess=parse(PostprocessConfig, data.get("postprocess"), "postprocess"),
                       description=dict(data.get("description", {})))
        except SettingsError as err:
            raise WeightsError(f"manifest: {err}") from None

    def to_dict(self) -> dict:
        return asdict(self)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(weights_dir: Path) -> Manifest:
    """Read and validate the manifest, and check every fold file's presence and hash."""
    path = weights_dir / MANIFEST
    if not path.is_file():
        raise WeightsError(f"{path}: no weights manifest found")
    try:
        manifest = Manifest.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise WeightsError(f"{path}: invalid manifest ({err})") from None
    for fold in manifest.folds:
        file = weights_dir / fold.file
        if not file.is_file():
            raise WeightsError(f"{file}: fold checkpoint listed in the manifest is missing")
        if sha256_of(file) != fold.sha256:
            raise WeightsError(f"{file}: SHA-256 does not match the manifest (corrupted or replaced file)")
    return manifest


def build_model(manifest: Manifest, state: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """The manifest's network; with ``state``, its tensors loaded (strictly: every one must fit)."""
    model = manifest.network.build(manifest.in_channels)
    if state is not None:
        model.load_state_dict(state)
    return model


def read_fold(path: Path) -> dict[str, torch.Tensor]:
    """One fold file's tensors on the CPU; tensors only, never pickled code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise WeightsError(f"{path}: holds pickled objects, not plain tensors; "
                           "refused (weights_only loading)") from None


def load_models(weights_dir: Path, manifest: Manifest, device: torch.device) -> list[nn.Module]:
    """One network per fold, in eval mode on ``device``; tensors only, never pickled code."""
    models = []
    for fold in manifest.folds:
        state = read_fold(weights_dir / fold.file)
        try:
            model = build_model(manifest, state)
        except (RuntimeError, ValueError, OSError) as err:
            first = str(err).strip().splitlines()[0][:200]
            raise WeightsError(f"{weights_dir / fold.file}: does not fit the manifest's network ({first})") from None
        models.append(model.to(device).eval())
    return models


def write_weights(weights_dir: Path, manifest: dict, states: list[dict[str, torch.Tensor]],
                  half: bool = False) -> Manifest:
    """Write fold checkpoints and a manifest listing their hashes (the export step of training).

    ``half`` stores floating tensors in float16, half the bytes, so that more folds fit the size limit;
    loading casts them back to the network's float32 (``load_state_dict`` copies into its tensors)."""
    weights_dir.mkdir(parents=True, exist_ok=True)
    folds = []
    for index, state in enumerate(states):
        name = f"fold{index}.pt"
        stored = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
                  for k, v in state.items()}
        torch.save(stored, weights_dir / name)
        folds.append({"file": name, "sha256": sha256_of(weights_dir / name)})
    data = {**manifest, "folds": folds}
    validated = Manifest.from_dict(data)
    (weights_dir / MANIFEST).write_text(json.dumps(validated.to_dict(), indent=2) + "\n")
    return validated
