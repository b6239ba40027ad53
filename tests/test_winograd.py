"""Winograd F(4×4, 3×3) convolution: the same result as PyTorch's direct one, on every shape the
predictor can feed it, and only where the CPU predictor puts it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import head_volume, tiny_weights
from torch import nn

import model.winograd as winograd
from model.families import build_network
from model.predictor import EnsemblePredictor
from model.weights import load_manifest, load_models
from model.winograd import WinogradConv2d, eligible, transformed_weights, use_winograd

CPU = torch.device("cpu")


def assert_close_to_direct(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Within Winograd's rounding (≈ 1e-5 of the output's range; a wrong tap or tile is ≈ 1)."""
    assert got.shape == expected.shape
    scale = expected.abs().max().item()
    assert (got - expected).abs().max().item() <= 1e-4 * scale


@pytest.mark.parametrize(("batch", "channels", "out", "height", "width", "padding"), [
    (1, 5, 7, 9, 11, (1, 1)),  # tiles past the end in both directions
    (3, 8, 8, 4, 4, (1, 1)),  # exactly one tile
    (2, 6, 3, 10, 13, (0, 0)),  # unpadded (as on a crop, where the input comes edge-padded)
    (2, 4, 4, 7, 8, (0, 1)),  # padding on one axis only
    (1, 3, 2, 1, 1, (1, 1)),  # a single pixel
    (4, 16, 24, 12, 20, (1, 1)),
])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
@torch.inference_mode()
def test_it_computes_the_direct_convolution(batch: int, channels: int, out: int, height: int, width: int,
                                            padding: tuple[int, int], bias: bool,
                                            layout: torch.memory_format) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(channels, out, 3, padding=padding, bias=bias)
    if bias:
        nn.init.normal_(conv.bias, 0.0, 1.0)  # large enough that a bias added wrongly shows
    x = torch.randn(batch, channels, height, width).contiguous(memory_format=layout)
    got = WinogradConv2d(conv)(x)
    assert_close_to_direct(got, conv(x))
    assert got.is_contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def test_a_batch_split_into_several_products_is_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """Big batches go through the matrix products a few images at a time (cache); the split is exact."""
    torch.manual_seed(1)
    conv = nn.Conv2d(8, 8, 3, padding=1)
    layer = WinogradConv2d(conv)
    x = torch.randn(5, 8, 12, 9)
    whole = layer(x)
    monkeypatch.setattr(winograd, "CHUNK", 1)  # one image per product
    torch.testing.assert_close(layer(x), whole, rtol=0, atol=0)
    assert_close_to_direct(whole, conv(x))


@torch.inference_mode()
def test_the_wide_layers_of_the_seed_size_network_run_at_its_accuracy() -> None:
    torch.manual_seed(2)
    conv = nn.Conv2d(128, 128, 3, padding=1)
    x = torch.randn(2, 128, 14, 10).contiguous(memory_format=torch.channels_last)
    assert_close_to_direct(WinogradConv2d(conv)(x), conv(x))


@torch.inference_mode()
def test_weights_transformed_once_for_a_block_give_the_same_result_and_are_dropped_after() -> None:
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, padding=1))
    assert use_winograd(model, min_channels=1) == 2
    x = torch.randn(2, 6, 9, 10)
    per_call = model(x)
    with transformed_weights(model):
        assert all(m.kept is not None for m in model.modules() if isinstance(m, WinogradConv2d))
        torch.testing.assert_close(model(x), per_call, rtol=0, atol=0)
    assert all(m.kept is None for m in model.modules() if isinstance(m, WinogradConv2d))
    with pytest.raises(RuntimeError), transformed_weights(model):
        model(torch.randn(1, 3, 8, 8))  # wrong channel count
    assert all(m.kept is None for m in model.modules() if isinstance(m, WinogradConv2d))


@torch.inference_mode()
def test_in_double_precision_the_difference_is_rounding_only() -> None:
    """The transforms are exact: in float64 the two agree to 1e-12, so float32's 1e-5 is rounding."""
    torch.manual_seed(3)
    conv = nn.Conv2d(16, 16, 3, padding=1).double()
    x = torch.randn(2, 16, 11, 7, dtype=torch.float64)
    torch.testing.assert_close(WinogradConv2d(conv)(x), conv(x), rtol=0, atol=1e-12)


def test_it_shares_the_convolution_parameters_and_keeps_the_state_dict() -> None:
    conv = nn.Conv2d(4, 6, 3, padding=1)
    layer = WinogradConv2d(conv)
    assert layer.weight is conv.weight and layer.bias is conv.bias
    assert layer.state_dict().keys() == conv.state_dict().keys()  # the transformed weight is not saved


@pytest.mark.parametrize("conv", [
    nn.Conv2d(128, 128, 3, stride=2, padding=1),
    nn.Conv2d(128, 128, 1),
    nn.Conv2d(128, 128, 3, padding=2, dilation=2),
    nn.Conv2d(128, 128, 3, padding=1, groups=2),
    nn.Conv2d(128, 128, 3, padding=1, padding_mode="replicate"),
    nn.Conv2d(128, 128, 3, padding=2),
    nn.Conv2d(64, 128, 3, padding=1),
    nn.ConvTranspose2d(128, 128, 3, padding=1),
    nn.Conv3d(128, 128, 3, padding=1),
], ids=["strided", "1x1", "dilated", "grouped", "replicate", "padding2", "narrow", "transposed", "3d"])
def test_only_plain_wide_3x3_convolutions_are_eligible(conv: nn.Module) -> None:
    assert eligible(nn.Conv2d(128, 128, 3, padding=1))
    assert not eligible(conv)


def test_the_seed_size_network_gets_it_in_its_wide_layers_and_the_shipped_one_nowhere() -> None:
    seed = build_network("segresnet2d", 3, {"init_filters": 32})
    converted = use_winograd(seed)
    layers = [m for m in seed.modules() if isinstance(m, WinogradConv2d)]
    assert converted == len(layers) > 0
    assert all(min(m.in_channels, m.out_channels) >= winograd.MIN_CHANNELS for m in layers)
    assert not any(eligible(m) for m in seed.modules())  # every eligible one converted
    assert use_winograd(build_network("segresnet2d", 3, {"init_filters": 8, "blocks_down": (1, 2, 2, 4)})) == 0


def test_the_cpu_predictor_runs_it_and_gives_the_direct_probability(tmp_path: Path) -> None:
    """A network with 128-channel levels (16 filters, five levels): converted on the AVX2 path, and the
    ensemble's probability is the direct convolution's, crop and edge padding included."""
    tiny_weights(tmp_path, "segresnet2d", network={"init_filters": 16, "blocks_down": (1, 1, 1, 1, 1)},
                 inference={"crop_margin": 16})
    manifest = load_manifest(tmp_path)
    models = load_models(tmp_path, manifest, CPU)
    hu = np.pad(head_volume((4, 48, 40)), ((0, 0), (24, 24), (24, 40)), constant_values=-1000).astype(np.float32)
    fast = EnsemblePredictor(models, manifest, CPU, winograd=True)  # the AVX2 path (model.compute)
    assert any(isinstance(m, WinogradConv2d) for m in fast.models[0].modules())
    assert not any(isinstance(m, WinogradConv2d) for m in models[0].modules())  # the callers' models untouched
    direct = EnsemblePredictor(models, manifest, CPU, winograd=False)
    assert not any(isinstance(m, WinogradConv2d) for m in direct.models[0].modules())
    got, expected = fast(hu), direct(hu)
    assert expected.max() > 0
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert all(m.kept is None for model in fast.models for m in model.modules()
               if isinstance(m, WinogradConv2d))  # no fold's transformed weights outlive its turn
