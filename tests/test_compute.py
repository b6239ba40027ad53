"""The compute path chosen by what the processor has (issue 17): bf16 where native and allowed, Winograd on AVX2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.compute import ComputePath, choose_path, cpu_has_native_bf16, cpu_model, set_cuda_convolutions
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


@pytest.mark.parametrize(("user", "allowed", "precision"), [
    ("auto", "auto", "fp16"),  # fp16 measured equal at export
    ("auto", "fp32", "fp32"),  # not measured, or measured unequal: fp32 on CUDA too
    ("fp32", "auto", "fp32"),  # forced by the user
])
def test_cuda_takes_fp16_only_where_the_manifest_allows(monkeypatch, user, allowed, precision):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    path = choose_path(torch.device("cuda"), user, "auto", cuda_precision=allowed)
    assert (path.device, path.precision, path.winograd, path.processor) == ("cuda", precision, False, "NVIDIA H200")
    assert path.autocast_dtype == (torch.float16 if precision == "fp16" else None)
    assert choose_path(CPU, user, "auto", flags=SAPPHIRE, cuda_precision=allowed).precision == \
        ("bf16" if user == "auto" else "fp32")  # the CPU's rule is its own


def test_cuda_fp32_means_fp32_convolutions(monkeypatch):
    """cuDNN's TF32 (PyTorch's default for convolutions) is off on a CUDA fp32 path, on for fp16; a CPU
    path leaves the switch alone."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    set_cuda_convolutions(ComputePath("cuda", "fp32", False, "gpu", "test"))
    assert torch.backends.cudnn.allow_tf32 is False
    set_cuda_convolutions(ComputePath("cpu", "fp32", True, "cpu", "test"))
    assert torch.backends.cudnn.allow_tf32 is False
    set_cuda_convolutions(ComputePath("cuda", "fp16", False, "gpu", "test"))
    assert torch.backends.cudnn.allow_tf32 is True


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
