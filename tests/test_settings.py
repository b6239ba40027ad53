"""The manifest is parsed once into typed settings: defaults from one place, unknown keys refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.families import CASCADE3D, FAMILIES, SEGRESNET2D, build_network
from model.networks import Cascade3DNetwork, SegResNet2DNetwork
from model.settings import Inference, PatchInference
from model.weights import Manifest, WeightsError, load_manifest

ROOT = Path(__file__).resolve().parents[1]
BASE = {"family": "segresnet2d", "input_mode": "windows3", "folds": [{"file": "f.pt", "sha256": "0"}]}


def test_the_shipped_manifest_loads_typed_and_round_trips() -> None:
    manifest = load_manifest(ROOT / "weights")
    assert isinstance(manifest.network, SegResNet2DNetwork) and type(manifest.inference) is Inference
    raw = json.loads((ROOT / "weights" / "manifest.json").read_text())
    assert manifest.inference.spacing_zyx == tuple(raw["inference"]["spacing_zyx"])
    assert manifest.network.blocks_down == tuple(raw["network"]["blocks_down"])
    again = Manifest.from_dict(json.loads(json.dumps(manifest.to_dict())))
    assert again == manifest
    written = again.to_dict()  # what export writes: every key it wrote before is still there
    for section in ("network", "inference", "postprocess"):
        assert set(raw[section]) <= set(written[section])


@pytest.mark.parametrize(("section", "key"), [("inference", "batchsize"), ("network", "init_filter"),
                                              ("postprocess", "min_component"), (None, "treshold")])
def test_an_unknown_key_is_an_error_naming_it(section: str | None, key: str) -> None:
    data = {**BASE, key: 0.5} if section is None else {**BASE, section: {key: 1}}
    with pytest.raises(WeightsError, match=f"'{key}'"):
        Manifest.from_dict(data)


def test_a_key_of_the_other_family_is_unknown() -> None:
    with pytest.raises(WeightsError, match="'roi_size'"):
        Manifest.from_dict({**BASE, "inference": {"roi_size": [4, 32, 32]}})
    cascade = Manifest.from_dict({**BASE, "family": "cascade3d", "inference": {"roi_size": [4, 32, 32]}})
    assert cascade.inference == PatchInference(roi_size=(4, 32, 32)) and cascade.spec is CASCADE3D


def test_missing_settings_take_the_family_defaults() -> None:
    manifest = Manifest.from_dict(BASE)
    assert manifest.network == SegResNet2DNetwork() and manifest.inference == Inference()
    assert manifest.spec is SEGRESNET2D and set(FAMILIES) == {"segresnet2d", "cascade3d"}
    assert PatchInference().roi_size == (16, 192, 192) and Cascade3DNetwork().max_filters == 320


def test_a_family_takes_only_its_input_modes() -> None:
    with pytest.raises(WeightsError, match="input_mode 'slices3' is not valid for cascade3d"):
        Manifest.from_dict({**BASE, "family": "cascade3d", "input_mode": "slices3"})
    with pytest.raises(ValueError, match="unknown model family 'unet'"):
        build_network("unet", 3)
