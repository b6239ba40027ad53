"""Winograd F(4×4, 3×3) convolution for the CPU: 4× fewer multiplications than a direct 3×3 one.

The seed-size 2D network spends about two thirds of its time in 3×3 convolutions of 128 to 512
channels, where oneDNN's direct convolution already runs at 0.9 of this CPU's matmul peak
(docs/speed.md), so only less arithmetic makes them faster. Winograd's algorithm (Lavin & Gray 2016)
computes each 4×4 output tile from a 6×6 input tile with 36 products per channel pair instead of
144: the input tiles and the weights are transformed, 36 matrix products over channels do the
work, and the result is transformed back. PyTorch's CPU convolutions offer no Winograd on AVX2
(oneDNN has it for AVX-512 only; NNPACK's was faster at 128 channels only, slower at 256 and 512),
hence this one, written with PyTorch's matmul. On CUDA cuDNN picks its own algorithm, so there the
layer is an ordinary convolution.

Rounding differs from a direct convolution (relative error ≈ 1e-5 of the output's range, against
≈ 1e-7), far below what moves a thresholded mask (tests/test_winograd.py, docs/speed.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional

TILE = 4  # outputs per tile side; a tile reads TILE + 2 inputs per side
MIN_CHANNELS = 128  # below this the transforms cost more than the products save (docs/speed.md)
CHUNK = 1 << 17  # tiles × channels per matrix product: ≈ 18 MB of transformed tiles, near cache size
_BT = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
       [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]  # input tile transform
_G = [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
      [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]  # weight transform
_AT = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]  # output transform
_ONES = 7  # (1, 1) of the 6 × 6 product grid: the output transform copies it to all 16 outputs


def eligible(conv: nn.Module, min_channels: int = MIN_CHANNELS) -> bool:
    """A plain 3×3, stride-1, undilated, ungrouped 2D convolution with zero padding 0 or 1 and at
    least ``min_channels`` input and output channels."""
    return (type(conv) is nn.Conv2d and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
            and isinstance(conv.padding, tuple) and all(p in (0, 1) for p in conv.padding)
            and min(conv.in_channels, conv.out_channels) >= min_channels)


class WinogradConv2d(nn.Conv2d):
    """A 3×3 convolution computed by Winograd F(4×4, 3×3) off CUDA, sharing ``conv``'s parameters.

    The transformed weight is 4× the weight (36 rather than 9 numbers per channel pair: 38 MB for a
    512-channel layer, 0.39 GB for the seed-size network), too much to keep for every fold of an
    ensemble; so it is made per call, or once for many calls inside :func:`transformed_weights`.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        if not eligible(conv, min_channels=1):
            raise ValueError(f"not a 3×3 stride-1 convolution with zero padding 0 or 1: {conv}")
        super().__init__(conv.in_channels, conv.out_channels, 3, padding=conv.padding, bias=conv.bias is not None,
                         device="meta")  # no storage or random initialisation for parameters replaced next
        self.weight, self.bias = conv.weight, conv.bias
        self.kept: torch.Tensor | None = None  # the transformed weight inside transformed_weights
        bt, g, at = (torch.tensor(m, dtype=torch.float64) for m in (_BT, _G, _AT))
        dtype, device = conv.weight.dtype, conv.weight.device
        self.register_buffer("into", torch.kron(bt, bt).to(device, dtype), persistent=False)
        self.register_buffer("of_weight", torch.kron(g, g).to(device, dtype), persistent=False)
        self.register_buffer("out_of", torch.kron(at, at).to(device, dtype), persistent=False)

    def transformed(self) -> torch.Tensor:
        """(36, in, out): the weight's matrix for each of the 36 product positions (a transposed view)."""
        if self.kept is not None:
            return self.kept
        flat = self.weight.reshape(self.out_channels * self.in_channels, 9)
        return (self.of_weight @ flat.t()).view(36, self.out_channels, self.in_channels).transpose(1, 2)

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if x.device.type == "cuda" or x.dtype != self.into.dtype:
            return super()._conv_forward(x, weight, bias)
        weights = self.transformed()
        batch, channels, height, width = x.shape
        (pad_h, pad_w), out_channels = self.padding, self.out_channels
        out_h, out_w = height + 2 * pad_h - 2, width + 2 * pad_w - 2
        tiles_h, tiles_w = -(-out_h // TILE), -(-out_w // TILE)
        need_h, need_w = tiles_h * TILE + 2, tiles_w * TILE + 2  # whole tiles: zeros after the end
        if (pad_h, pad_w, need_h, need_w) != (0, 0, height, width):
            x = functional.pad(x, (pad_w, need_w - width - pad_w, pad_h, need_h - height - pad_h))
        tiles = x.unfold(2, TILE + 2, TILE).unfold(3, TILE + 2, TILE)  # (N, C, tiles_h, tiles_w, 6, 6), a view
        out = torch.empty((batch, tiles_h * TILE, tiles_w * TILE, out_channels), dtype=x.dtype, device=x.device)
        step = max(1, CHUNK // (tiles_h * tiles_w * max(channels, out_channels)))  # images per product
        for start in range(0, batch, step):
            part = tiles[start: start + step]
            n = part.shape[0]
            inputs = (self.into @ part.permute(4, 5, 0, 2, 3, 1).reshape(36, -1)).view(36, -1, channels)
            products = torch.bmm(inputs, weights)  # (36, tiles, out)
            if bias is not None:
                products[_ONES] += bias
            result = (self.out_of @ products.view(36, -1)).view(TILE, TILE, n, tiles_h, tiles_w, out_channels)
            out[start: start + n].view(n, tiles_h, TILE, tiles_w, TILE, out_channels).copy_(
                result.permute(2, 3, 0, 4, 1, 5))
        out = out.permute(0, 3, 1, 2)  # (N, out, H, W) in channels-last memory
        if (tiles_h * TILE, tiles_w * TILE) != (out_h, out_w):
            out = out[..., :out_h, :out_w].contiguous(memory_format=torch.channels_last)
        return out


@contextmanager
def transformed_weights(model: nn.Module) -> Iterator[None]:
    """Inside the block, ``model``'s Winograd layers transform their weights once, not per call."""
    layers = [m for m in model.modules() if isinstance(m, WinogradConv2d)]
    for layer in layers:
        layer.kept = layer.transformed().detach()
    try:
        yield
    finally:
        for layer in layers:
            layer.kept = None


def use_winograd(model: nn.Module, min_channels: int = MIN_CHANNELS) -> int:
    """Replace ``model``'s eligible convolutions (:func:`eligible`) by :class:`WinogradConv2d`, in
    place; the number replaced."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if eligible(child, min_channels):
                setattr(parent, name, WinogradConv2d(child))
                replaced += 1
    return replaced
