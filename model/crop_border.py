"""Edge padding at a cropped slice's inner borders, inside a 2D network.

Beyond a crop's border the whole slice goes on in air, where every layer's features are nearly
those of the air at the border. Zero padding at each convolution says instead that the image ends
there, and through the receptive field that reaches far into the crop: the shipped model needed
64 pixels of air around the head to reproduce whole-slice masks. Repeating each feature map's
edge pixels needs 16 (docs/speed.md, measured out of fold). Sides where the crop is the slice's own
edge keep zero padding, as the uncropped network has there.

Hand-written because PyTorch's ``padding_mode`` applies one mode to all four sides, and its
transposed convolutions support zero padding only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from monai.networks.nets.segresnet_ds import SegResBlock
from torch import nn


class Sides(NamedTuple):
    """Which sides of a crop lie inside the slice (edge padding) rather than on its edge (zeros)."""

    top: bool
    bottom: bool
    left: bool
    right: bool

    def mirrored(self) -> Sides:
        """The sides of the left–right flipped crop."""
        return Sides(self.top, self.bottom, self.right, self.left)


def crop_sides(rows: slice, cols: slice, height: int, width: int) -> Sides:
    """The inner sides of the box ``rows`` × ``cols`` of a ``height`` × ``width`` slice."""
    return Sides(rows.start > 0, rows.stop < height, cols.start > 0, cols.stop < width)


def _extra(conv: nn.ConvTranspose2d) -> tuple[int, int]:
    """Input pixels beyond a side that reach a transposed convolution's output (rows, columns).

    Output ``o`` takes input ``i`` through kernel tap ``t`` where ``o = i·stride − padding + t``: past
    the end that is ``(kernel − 1 − padding + output_padding) // stride`` pixels, before the start no
    more (padding both sides alike keeps the trim simple; an unused pixel changes nothing).
    """
    return tuple(max((k - 1 - p + q) // s, 0)
                 for k, p, s, q in zip(conv.kernel_size, conv.padding, conv.stride, conv.output_padding,
                                       strict=True))


def _zero_padded(m: nn.Module) -> bool:
    """A 2D convolution (Winograd's included) with zero padding on some side."""
    return (isinstance(m, nn.Conv2d) and m.padding_mode == "zeros" and isinstance(m.padding, tuple)
            and any(m.padding))


class CropBorderPadding:
    """Switchable edge padding for every padded 2D convolution of one model (hooks, off by default).

    A convolution's input is copied into a larger tensor with its edges repeated; in a residual
    block the ReLU before each convolution writes its output straight into that tensor instead
    (:class:`_EdgePaddedReLU`, which replaces the block's ``nn.ReLU`` in ``model``), which saves the
    copy: most of the network's convolutions follow one.
    """

    def __init__(self, model: nn.Module) -> None:
        self.sides: Sides | None = None
        self.padding: dict[nn.Conv2d, tuple[int, int]] = {}  # each convolution's own zero padding
        self.extra: dict[nn.ConvTranspose2d, tuple[int, int]] = {}  # each transposed one's reach (_extra)
        after_relu = set()
        for block in model.modules():
            if isinstance(block, SegResBlock):
                for act, conv in (("act1", block.conv1), ("act2", block.conv2)):
                    if type(getattr(block, act)) is nn.ReLU and _zero_padded(conv):
                        setattr(block, act, _EdgePaddedReLU(self, getattr(block, act), conv.padding))
                        after_relu.add(conv)
        for m in model.modules():
            if isinstance(m, nn.ConvTranspose2d) and any(_extra(m)):
                self.extra[m] = _extra(m)
                m.register_forward_pre_hook(self._pad_transposed)
                m.register_forward_hook(self._trim_transposed)
            elif _zero_padded(m):
                self.padding[m] = m.padding
                if m not in after_relu:
                    m.register_forward_pre_hook(self._pad_conv)

    @contextmanager
    def inner(self, sides: Sides | None) -> Iterator[None]:
        """Edge-pad the ``sides`` that are inside the slice while the block runs (``None``: as trained)."""
        if sides is None or not any(sides):
            yield
            return
        self.sides = sides
        for conv in self.padding:
            conv.padding = (0, 0)  # its input comes padded
        try:
            yield
        finally:
            self.sides = None
            for conv, padding in self.padding.items():
                conv.padding = padding

    def pad(self, x: torch.Tensor, rows: int, cols: int, relu: bool = False) -> torch.Tensor:
        """``x`` (its ReLU with ``relu``) with ``rows`` and ``cols`` more on each side: its edge
        repeated on inner sides, else zeros.

        One pass into a tensor of ``x``'s layout (``F.pad``'s replicate mode, then zeroing the outer
        sides, makes two; replicate alone was 46 % slower on a channels-last batch).
        """
        height, width = x.shape[-2:]
        layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        padded = torch.empty((*x.shape[:-2], height + 2 * rows, width + 2 * cols), dtype=x.dtype, device=x.device,
                             memory_format=layout)
        interior = padded[..., rows: rows + height, cols: cols + width]
        if relu:
            torch.clamp_min(x, 0.0, out=interior)
        else:
            interior.copy_(x)
        top, bottom, left, right = self.sides
        band = padded[..., rows: rows + height, :]  # the image's rows: their ends first, then whole rows
        band[..., :cols] = interior[..., :1] if left else 0
        band[..., cols + width:] = interior[..., -1:] if right else 0
        padded[..., :rows, :] = padded[..., rows: rows + 1, :] if top else 0
        padded[..., rows + height:, :] = padded[..., rows + height - 1: rows + height, :] if bottom else 0
        return padded

    def _pad_conv(self, conv: nn.Conv2d, args: tuple[torch.Tensor]) -> tuple[torch.Tensor] | None:
        if self.sides is None:
            return None
        return (self.pad(args[0], *self.padding[conv]),)

    def _pad_transposed(self, conv: nn.ConvTranspose2d, args: tuple[torch.Tensor]) -> tuple[torch.Tensor] | None:
        if self.sides is None:
            return None
        return (self.pad(args[0], *self.extra[conv]),)

    def _trim_transposed(self, conv: nn.ConvTranspose2d, args: tuple[torch.Tensor],
                         out: torch.Tensor) -> torch.Tensor | None:
        """Output of the padded input, less what the extra input pixels added (``stride`` per pixel)."""
        if self.sides is None:
            return None
        (rows, cols), (sr, sc) = self.extra[conv], conv.stride
        return out[..., rows * sr: out.shape[-2] - rows * sr, cols * sc: out.shape[-1] - cols * sc]


class _EdgePaddedReLU(nn.Module):
    """A residual block's ReLU that, on a crop, writes straight into the edge-padded input of the
    convolution after it: a network call 4–11 % faster than copying it there (docs/speed.md)."""

    def __init__(self, border: CropBorderPadding, relu: nn.ReLU, padding: tuple[int, int]) -> None:
        super().__init__()
        self.border, self.relu, self.padding = border, relu, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.border.sides is None:
            return self.relu(x)
        return self.border.pad(x, *self.padding, relu=True)
