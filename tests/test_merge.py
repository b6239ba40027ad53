"""``train.py merge``: one ensemble from the folds of two weights folders, stored in float16."""

from pathlib import Path

import numpy as np
import pytest
import torch

import train
from model.predictor import EnsemblePredictor
from model.weights import load_manifest, load_models, write_weights
from tests.conftest import head_volume, tiny_weights

CPU = torch.device("cpu")


def second_run(folder: Path, first: Path) -> None:
    """A folder with other folds (the first's with their convolutions moved) and another threshold."""
    manifest = load_manifest(first)
    states = []
    for index, fold in enumerate(manifest.folds):
        state = torch.load(first / fold.file, weights_only=True)
        generator = torch.Generator().manual_seed(10 + index)
        states.append({k: v + 0.3 * torch.randn(v.shape, generator=generator) if v.ndim == 4 else v
                       for k, v in state.items()})
    write_weights(folder, {**manifest.to_dict(), "threshold": 0.7}, states)


def ensemble(folder: Path) -> EnsemblePredictor:
    manifest = load_manifest(folder)
    return EnsemblePredictor(load_models(folder, manifest, CPU), manifest, CPU)


def test_merged_ensemble_is_the_mean_of_every_fold_with_the_first_settings(tmp_path: Path) -> None:
    tiny_weights(tmp_path / "a", folds=2)
    second_run(tmp_path / "b", tmp_path / "a")
    runs = [str(tmp_path / "a"), str(tmp_path / "b")]
    assert train.main(["merge", "--weights", *runs, "--out", str(tmp_path / "m"), "--description", "summary=two"]) == 0
    assert train.main(["merge", "--weights", *runs, "--out", str(tmp_path / "m32"), "--float32"]) == 0
    merged = load_manifest(tmp_path / "m")  # verifies the four hashes
    assert len(merged.folds) == 4 and merged.threshold == load_manifest(tmp_path / "a").threshold
    assert merged.description["summary"] == "two" and merged.description["stored"] == "float16"
    stored = torch.load(tmp_path / "m" / merged.folds[0].file, weights_only=True)
    assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())
    assert any(v.dtype == torch.int64 for v in stored.values())  # batch-norm counters stay integers
    hu = head_volume().astype(np.float32)
    a, b = ensemble(tmp_path / "a")(hu), ensemble(tmp_path / "b")(hu)
    assert np.abs(a - b).max() > 0.05  # the two runs differ, so the mean is a real test
    np.testing.assert_allclose(ensemble(tmp_path / "m32")(hu), (a + b) / 2, atol=1e-6)
    # float16 rounds the weights only; these random untrained networks amplify it more than the shipped
    # folds do (there: at most 0.004 in probability and no voxel of three held-out cases changed)
    half = ensemble(tmp_path / "m")(hu)
    assert np.abs(half - (a + b) / 2).mean() < 1e-3
    assert ((half > 0.5) == ((a + b) / 2 > 0.5)).mean() > 0.99


def test_merge_refuses_another_network_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tiny_weights(tmp_path / "a", folds=1)
    tiny_weights(tmp_path / "b", folds=1, network={"init_filters": 8, "blocks_down": [1, 1, 1], "dsdepth": 2})
    runs = [str(tmp_path / "a"), str(tmp_path / "b")]
    assert train.main(["merge", "--weights", *runs, "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "network" in err and str(tmp_path / "b") in err
    assert not (tmp_path / "m").exists()
