"""The bf16 checks: a convolution whose bf16 output or gradients are wrong is found; training then runs
in fp32 and says so, and the predictor takes the fp32 path with the reason; right ones pass, whatever
bf16 kernels this CPU has."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TINY, head_volume, tiny_weights
from torch import nn

from model.bf16_check import TOLERANCE, bf16_error, faulty_bf16_convolutions
from model.compute import ComputePath
from model.predictor import EnsemblePredictor
from model.weights import load_models
from tests.ones_dataset import OnesDataset
from training.distributed import DistInfo
from training.loop import LoopConfig
from training.loop import fit as loop_fit


class _WrongInBf16(nn.Conv2d):
    """A convolution whose bf16 path is off by a factor of two, as a faulty kernel's would be."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out * 2 if torch.is_autocast_enabled("cpu") else out


def _network(faulty: bool) -> nn.Module:
    torch.manual_seed(0)
    second = (_WrongInBf16 if faulty else nn.Conv2d)(8, 8, 3, padding=1)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), second,
                         nn.Conv2d(8, 1, 1)).to(memory_format=torch.channels_last)


def test_right_convolutions_pass_the_bf16_check() -> None:
    example = torch.zeros(4, 1, 24, 24).contiguous(memory_format=torch.channels_last)
    assert faulty_bf16_convolutions(_network(faulty=False), example) == []
    assert bf16_error(nn.Conv3d(4, 8, 3, padding=1), ((2, 4, 4, 6, 6), torch.contiguous_format)) < TOLERANCE


def test_a_convolution_wrong_in_bf16_is_found_at_its_input_shape() -> None:
    model = _network(faulty=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    faulty = faulty_bf16_convolutions(model, torch.zeros(4, 1, 24, 24).contiguous(memory_format=torch.channels_last))
    assert [(f.name, f.input_shape) for f in faulty] == [("3", (4, 8, 24, 24))]
    assert faulty[0].error == pytest.approx(1.0, abs=0.05)
    assert "3 (input 4×8×24×24: error 1" in str(faulty[0])
    after = model.state_dict()  # the check ran on a copy: no batch-norm statistic moved
    assert all(torch.equal(after[k], v) for k, v in before.items())


@pytest.mark.parametrize("faulty", [False, True])
def test_training_falls_back_to_fp32_where_bf16_gradients_are_wrong(tmp_path: Path, faulty: bool,
                                                                    capsys: pytest.CaptureFixture) -> None:
    dtypes = []

    def loss_fn(out: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        dtypes.append(out.dtype)
        return ((out.float() - label) ** 2).mean()

    config = LoopConfig(epochs=1, steps_per_epoch=2, batch_size=2, lr=0.01, workers=0, bf16=True)
    loop_fit(_network(faulty), OnesDataset(16), loss_fn, [], lambda m, c: 0.0, tmp_path, config,
             DistInfo(0, 1, torch.device("cpu")))
    said = capsys.readouterr().out
    if faulty:
        assert "train: bf16 is wrong on this CPU for 1 convolution(s), e.g. 3 (input 2×8×16×16" in said
        assert "training in fp32" in said and dtypes == [torch.float32] * 2
    else:
        assert "bf16 is wrong" not in said and dtypes == [torch.bfloat16] * 2


@pytest.mark.parametrize("faulty", [False, True])
def test_the_predictor_takes_fp32_where_bf16_gets_an_output_wrong(tmp_path: Path, faulty: bool) -> None:
    manifest = tiny_weights(tmp_path, folds=1)
    models = load_models(tmp_path, manifest, torch.device("cpu"))
    if faulty:
        models[0].encoder.conv_init.__class__ = _WrongInBf16  # the stem: no batch norm folded into it
    bf16 = ComputePath("cpu", "bf16", False, "test CPU", "native bf16")
    path = EnsemblePredictor(models, manifest, torch.device("cpu"), path=bf16).path
    if faulty:
        assert path.precision == "fp32" and path.autocast_dtype is None
        assert path.reason.startswith("fp32: bf16 is wrong on this CPU for 1 convolution(s), e.g. encoder.conv_init "
                                      "(input 1×3×256×256: error 1")
    else:
        assert path == bf16


class _Case:
    """What export measures precision on: a cached case's HU."""

    def hu(self) -> object:
        return head_volume((4, 48, 44))


@pytest.mark.parametrize("faulty", [False, True])
def test_export_refuses_bf16_where_this_cpu_computes_it_wrong(tmp_path: Path, faulty: bool) -> None:
    """Export's bf16 predictor would fall back to fp32 on such a CPU and agree with fp32 perfectly; it
    must refuse instead of measuring, and say why."""
    from training.export import precision_agreement

    manifest = tiny_weights(tmp_path, folds=1)
    models = load_models(tmp_path, manifest, torch.device("cpu"))
    if faulty:
        models[0].encoder.conv_init.__class__ = _WrongInBf16
    config = {"family": "segresnet2d", "input_mode": "windows3", "network": TINY["segresnet2d"]["network"]}
    result = precision_agreement([(_Case(), models)], config, 0.5, {"batch_size": 4})["bf16"]
    if faulty:
        assert result["allowed"] is False and result["cases"] == 1 and "dice" not in result
        assert result["refused"].startswith("fp32: bf16 is wrong on this CPU for 1 convolution(s), "
                                            "e.g. encoder.conv_init")
    else:
        assert "refused" not in result and 0.0 <= result["dice"] <= 1.0
