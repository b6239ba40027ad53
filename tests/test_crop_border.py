"""Edge padding at a crop's inner sides: each padded layer computes on the crop what it computes on
the whole image when the image goes on beyond the crop as the crop's edge repeated."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_weights
from monai.networks.nets.segresnet_ds import SegResBlock
from torch import nn

from model.crop_border import CropBorderPadding, Sides, _EdgePaddedReLU, crop_sides
from model.predictor import EnsemblePredictor
from model.weights import load_manifest, load_models
from model.winograd import WinogradConv2d

CPU = torch.device("cpu")
EXTEND = 4  # input pixels the whole image has beyond each inner side


LAYERS = {  # name: (in, out, kernel, stride, padding, dilation, groups); the seed's are 3 × 3, stride 1 or 2
    "conv": (3, 4, 3, 1, 1, 1, 1),
    "strided": (3, 4, 3, 2, 1, 1, 1),
    "wide": (3, 4, 5, 1, 2, 1, 1),
    "dilated": (3, 4, 3, 1, 2, 2, 1),
    "grouped": (4, 4, 3, 1, 1, 1, 2),
    "strided-wide": (3, 4, 5, 2, 2, 1, 1),
}


def layers() -> list[nn.Module]:
    torch.manual_seed(0)
    return [nn.Conv2d(*args[:3], stride=args[3], padding=args[4], dilation=args[5], groups=args[6])
            for args in LAYERS.values()] + [nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1),
                                            WinogradConv2d(nn.Conv2d(3, 4, 3, padding=1))]


@pytest.mark.parametrize("shape", [(8, 12), (7, 5), (2, 3)], ids=["even", "odd", "tiny"])
@pytest.mark.parametrize("sides", [Sides(*flags) for flags in itertools.product((False, True), repeat=4) if any(flags)])
@pytest.mark.parametrize("index", range(len(LAYERS) + 2), ids=[*LAYERS, "transposed", "winograd"])
@torch.inference_mode()
def test_a_padded_layer_on_the_crop_equals_it_on_the_edge_extended_image(sides: Sides, index: int,
                                                                          shape: tuple[int, int]) -> None:
    """Outer sides (on the image's edge) keep zero padding; inner ones see the image's continuation,
    also where the bands next to two sides overlap (the tiny crop). At least one side is inner: with
    none the crop is the image and the expectation would be the layer's own output."""
    layer = layers()[index]
    crop = torch.randn(2, layer.in_channels, *shape)
    top, left = EXTEND * sides.top, EXTEND * sides.left
    whole = F.pad(crop, (left, EXTEND * sides.right, top, EXTEND * sides.bottom), mode="replicate")
    scale = layer.stride[0] if isinstance(layer, nn.ConvTranspose2d) else 1 / layer.stride[0]
    with CropBorderPadding(layer).inner(sides):
        got = layer(crop)
    expected = layer(whole)[..., int(top * scale): int(top * scale) + got.shape[-2],
                            int(left * scale): int(left * scale) + got.shape[-1]]
    torch.testing.assert_close(got, expected)
    if all(sides):
        assert not torch.allclose(layer(crop), expected)  # zero padding differs: the test can fail


@torch.inference_mode()
def test_the_layers_are_as_trained_outside_the_block_even_after_an_error() -> None:
    layer, x = layers()[0], torch.randn(1, 3, 6, 6)
    plain = layer(x)
    with pytest.raises(RuntimeError), CropBorderPadding(layer).inner(Sides(True, True, True, True)):
        layer(torch.randn(1, 5, 6, 6))  # wrong channel count
    torch.testing.assert_close(layer(x), plain)


def test_hooks_go_on_the_predictors_own_copies_once(tmp_path: Path) -> None:
    """The predictor pads its own copies: a model being trained or benchmarked stays as it was."""
    tiny_weights(tmp_path, "segresnet2d", folds=1)
    manifest = load_manifest(tmp_path)
    model = load_models(tmp_path, manifest, CPU)[0]
    predictor = EnsemblePredictor([model], manifest, CPU)
    padded = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d) and any(m.padding)]
    assert padded and not any(m._forward_pre_hooks or m._forward_hooks for m in padded)
    assert predictor.models[0] is not model
    copy = predictor.models[0]
    relus = [m for m in copy.modules() if isinstance(m, _EdgePaddedReLU)]
    assert relus and not any(isinstance(m, _EdgePaddedReLU) for m in model.modules())
    blocks = [m for m in copy.modules() if isinstance(m, SegResBlock)]
    after_relu = {id(block.conv1) for block in blocks} | {id(block.conv2) for block in blocks}
    hooks = {(type(m), id(m) in after_relu, len(m._forward_pre_hooks), len(m._forward_hooks))
             for m in copy.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d) and any(m.padding)}
    # pre-padded by the ReLU before it, or padded by a hook; transposed: padded and trimmed
    assert hooks == {(nn.Conv2d, True, 0, 0), (nn.Conv2d, False, 1, 0), (nn.ConvTranspose2d, False, 1, 1)}
    assert len(relus) == len(after_relu)


def edge_padded(x: torch.Tensor, sides: Sides, amount: int) -> torch.Tensor:
    """``x`` with ``amount`` more pixels per side, repeated at inner ``sides`` and zero at the others."""
    top, bottom, left, right = (amount * side for side in sides)
    x = F.pad(x, (left, right, top, bottom), mode="replicate")
    return F.pad(x, (amount - left, amount - right, amount - top, amount - bottom))


@pytest.mark.parametrize("winograd", [False, True], ids=["direct", "winograd"])
@pytest.mark.parametrize("sides", [Sides(True, True, True, True), Sides(False, True, True, False)])
@torch.inference_mode()
def test_a_residual_block_pads_the_relu_output_it_feeds_its_convolutions(sides: Sides, winograd: bool) -> None:
    """Where the ReLU writes into the padded tensor: the block still edge-pads every convolution,
    Winograd's (as the CPU predictor runs the wide ones) included."""
    torch.manual_seed(0)
    block = SegResBlock(spatial_dims=2, in_channels=4, kernel_size=3, norm="batch", act="relu").eval()
    block.norm1.running_mean.uniform_(-1, 1)
    block.norm2.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 4, 9, 6).contiguous(memory_format=torch.channels_last)
    h = F.conv2d(edge_padded(torch.relu(block.norm1(x)), sides, 1), block.conv1.weight)
    expected = x + F.conv2d(edge_padded(torch.relu(block.norm2(h)), sides, 1), block.conv2.weight)
    if winograd:
        block.conv1, block.conv2 = WinogradConv2d(block.conv1), WinogradConv2d(block.conv2)
    border = CropBorderPadding(block)
    assert isinstance(block.act1, _EdgePaddedReLU) and isinstance(block.act2, _EdgePaddedReLU)
    with border.inner(sides):
        got = block(x.clone())
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(block(x.clone()), x + block.conv2(torch.relu(block.norm2(block.conv1(
        torch.relu(block.norm1(x)))))))  # as trained outside the block


def test_crop_sides_and_their_mirror() -> None:
    sides = crop_sides(slice(0, 16), slice(8, 64), 32, 64)
    assert sides == Sides(top=False, bottom=True, left=True, right=False)
    assert sides.mirrored() == Sides(top=False, bottom=True, left=False, right=True)


def test_mirroring_a_crop_inside_the_slice_on_one_side_only(tmp_path: Path) -> None:
    """The flipped view's inner side is the other one: the mirrored result is the mean of the crop's
    prediction and the flipped volume's, whose crop has its inner side on the left."""
    tiny_weights(tmp_path, "segresnet2d", folds=1, inference={"crop_margin": 4})
    manifest = load_manifest(tmp_path)
    models = load_models(tmp_path, manifest, CPU)
    hu = np.full((4, 32, 64), -1000.0, dtype=np.float32)
    hu[:, 4:28, :24] = 40.0  # touches the left edge: the crop's left side is the slice's, its right is inside
    plain = EnsemblePredictor(models, manifest, CPU, mirror=False)
    expected = (plain(hu) + plain(hu[..., ::-1].copy())[..., ::-1]) / 2
    np.testing.assert_allclose(EnsemblePredictor(models, manifest, CPU, mirror=True)(hu), expected, atol=1e-6)
