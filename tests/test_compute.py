"""The compute path chosen by what the processor has (issue 17): bf16 where native and allowed, Winograd on AVX2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.compute import choose_path, cpu_has_native_bf16, cpu_model
from model.predictor import EnsemblePredictor
from model.weights import load_manifest, load_models
from tests.conftest import head_volume, tiny_weights

CPU = torch.device("cpu")
EPYC = {"avx", "avx2", "fma"}
SKYLAKE = EPYC | {"avx512f", "avx512bw"}
SAPPHIRE = SKYLAKE | {"avx512_bf16", "amx_bf16", "amx_tile"}


@pytest.mark.parametrize(("flags", "user", "manifest", "precision", "winograd"), [
    (EPYC, "auto", "auto", "fp32", True),  # no native bf16: fp32, hand-written Winograd
    (SKYLAKE, "auto", "auto", "fp32", True),  # AVX-512 without bf16: Winograd measured faster in fp32 too
    (SAPPHIRE, "auto", "auto", "bf16", False),
    (SAPPHIRE, "fp32", "auto", "fp32", True),  # forced by the user
    (SAPPHIRE, "auto", "fp32", "fp32", True),  # the weights were not measured equal in bf16
    (set(), "auto", "auto", "fp32", False),  # no AVX2 at all: plain
])
def test_path_follows_the_processor_the_user_and_the_manifest(flags, user, manifest, precision, winograd):
    path = choose_path(CPU, user, manifest, flags=flags)
    assert (path.precision, path.winograd) == (precision, winograd)
    assert path.processor == cpu_model() and path.reason
    assert path.record()["precision"] == precision


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        choose_path(CPU, "fp8")


def test_predictor_takes_the_manifests_cpu_precision(tmp_path):
    tiny_weights(tmp_path / "fp32")
    tiny_weights(tmp_path / "auto", inference={"batch_size": 4, "cpu_precision": "auto"})
    hu = head_volume().astype(np.float32)
    probs = {}
    for name in ("fp32", "auto"):
        manifest = load_manifest(tmp_path / name)
        predictor = EnsemblePredictor(load_models(tmp_path / name, manifest, CPU), manifest, CPU)
        expected = "bf16" if name == "auto" and cpu_has_native_bf16() else "fp32"
        assert predictor.path.precision == expected
        probs[name] = predictor(hu)
    np.testing.assert_allclose(probs["auto"], probs["fp32"], atol=2e-2)  # bf16 rounding at most
