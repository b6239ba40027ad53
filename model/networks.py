"""The two model families of the seed papers, assembled from MONAI building blocks.

``segresnet2d``: MONAI ``SegResNetDS`` on single slices (second seed; 32 filters and
``blocks_down=(1, 2, 2, 4, 4)`` is the seed size, ≈184 GFLOP per 512 × 512 slice). Its
normalisation is MONAI's default, batch norm (manifest ``network.norm``): at inference its statistics
are fixed, so a slice cropped to the head gives the whole slice's result away from the crop's
border, which instance norm (statistics of the input, air included) cannot (docs/speed.md).

``cascade3d``: two 3D U-Nets (first seed). Each level is MONAI's ``UnetBasicBlock``
(Conv–InstanceNorm–LeakyReLU twice); downsampling is max pooling, upsampling a transposed
convolution whose kernel equals the pooling kernel (2×2×2, or 1×2×2 in-plane), features start
at 32 and double per level up to 320, and a 1×1×1 convolution gives one logit. Stage 2 sees
the windowed image plus stage 1's probability. MONAI's ``DynUNet`` downsamples by strided
convolution, not max pooling, hence this small assembly.

Both families output one channel of logits; the probability of haemorrhage is its sigmoid.
(The seed's two-class softmax is the same function of the logit difference.)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from monai.networks.blocks.dynunet_block import UnetBasicBlock, UnetOutBlock, UnetUpBlock
from monai.networks.nets import SegResNetDS
from monai.networks.nets.segresnet_ds import SegResBlock
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

NORM = "instance"  # the 3D cascade's, as in the first seed


class UNet3D(nn.Module):
    """3D U-Net with max-pool downsampling; ``pool_kernels`` sets the levels (anisotropic allowed)."""

    def __init__(self, in_channels: int, pool_kernels: Sequence[Sequence[int]], init_filters: int = 32,
                 max_filters: int = 320) -> None:
        super().__init__()
        self.pool_kernels = [tuple(int(v) for v in k) for k in pool_kernels]
        features = [min(init_filters * 2**i, max_filters) for i in range(len(self.pool_kernels) + 1)]
        self.stem = UnetBasicBlock(3, in_channels, features[0], kernel_size=3, stride=1, norm_name=NORM)
        self.pools = nn.ModuleList(nn.MaxPool3d(k, stride=k) for k in self.pool_kernels)
        self.down = nn.ModuleList(
            UnetBasicBlock(3, features[i], features[i + 1], kernel_size=3, stride=1, norm_name=NORM)
            for i in range(len(self.pool_kernels)))
        self.up = nn.ModuleList(
            UnetUpBlock(3, features[i + 1], features[i], kernel_size=3, stride=1,
                        upsample_kernel_size=self.pool_kernels[i], norm_name=NORM)
            for i in reversed(range(len(self.pool_kernels))))
        self.head = UnetOutBlock(3, features[0], 1)

    def shape_factor(self) -> tuple[int, int, int]:
        """Input sizes (z, y, x) must be multiples of these."""
        factor = torch.tensor([1, 1, 1])
        for k in self.pool_kernels:
            factor *= torch.tensor(k)
        return tuple(int(v) for v in factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for pool, block in zip(self.pools, self.down, strict=True):
            skips.append(block(pool(skips[-1])))
        x = skips.pop()
        for block in self.up:
            x = block(x, skips.pop())
        return self.head(x)


class Cascade3D(nn.Module):
    """Stage 1 segments the windowed image; stage 2 refines with stage 1's probability as a channel."""

    def __init__(self, in_channels: int, pool_kernels: Sequence[Sequence[int]], init_filters: int = 32,
                 max_filters: int = 320) -> None:
        super().__init__()
        self.stage1 = UNet3D(in_channels, pool_kernels, init_filters, max_filters)
        self.stage2 = UNet3D(in_channels + 1, pool_kernels, init_filters, max_filters)

    def shape_factor(self) -> tuple[int, int, int]:
        return self.stage1.shape_factor()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Both stages on one patch (training and small volumes); inference may run them separately."""
        return self.stage2(torch.cat([x, torch.sigmoid(self.stage1(x))], dim=1))


@dataclass(frozen=True)
class SegResNet2DNetwork:
    """Manifest ``network`` of the 2D family; the defaults are the second seed's size."""

    init_filters: int = 32
    blocks_down: tuple[int, ...] = (1, 2, 2, 4, 4)
    dsdepth: int = 4  # deep-supervision outputs (training's loss weighs them; inference reads the first)
    norm: str = "batch"  # batch norm: fixed statistics, so a crop gives the whole slice's result

    def build(self, in_channels: int) -> nn.Module:
        return SegResNetDS(spatial_dims=2, in_channels=in_channels, out_channels=1, init_filters=self.init_filters,
                           blocks_down=self.blocks_down, dsdepth=self.dsdepth, norm=self.norm)


@dataclass(frozen=True)
class Cascade3DNetwork:
    """Manifest ``network`` of the 3D cascade; the defaults are the first seed's size."""

    pool_kernels: tuple[tuple[int, int, int], ...] = ((1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2))
    init_filters: int = 32
    max_filters: int = 320

    def build(self, in_channels: int) -> nn.Module:
        return Cascade3D(in_channels, self.pool_kernels, self.init_filters, self.max_filters)


def for_inference(model: nn.Module) -> nn.Module:
    """An eval-mode copy with each residual block's second batch norm folded into the convolution
    before it (``conv1`` → ``norm2``: an affine map of a linear one, exact up to rounding).

    One memory pass fewer per block; the first norm follows the residual sum and cannot be folded.
    On this CPU the shipped 2D network ran 8 % faster, the seed-size one, compute-bound, 2–4 %
    (docs/speed.md). A copy, so a model being trained or compared against is never changed.
    """
    model = copy.deepcopy(model).eval()
    for block in model.modules():
        if isinstance(block, SegResBlock) and isinstance(block.norm2, nn.modules.batchnorm._BatchNorm):
            block.conv1 = fuse_conv_bn_eval(block.conv1, block.norm2)
            block.norm2 = nn.Identity()
    return model
