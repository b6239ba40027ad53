"""Losses of the two seeds, from MONAI: Dice + binary cross-entropy on one logit channel.

The 2D SegResNet's deep-supervision outputs are weighted 1, 1/2, 1/4, 1/8 (MONAI's ``"exp"`` mode,
floored at 1/16 from the fifth level on) against targets downsized by nearest neighbour.
"""

from __future__ import annotations

from monai.losses import DeepSupervisionLoss, DiceCELoss
from torch import nn


def dice_bce() -> DiceCELoss:
    """Per-sample soft Dice (``batch=False``, so a step's loss is the mean over samples: the same for any
    split of the batch over processes) plus BCE with logits."""
    return DiceCELoss(sigmoid=True, batch=False)


def build_loss(family: str) -> nn.Module:
    if family == "segresnet2d":
        return DeepSupervisionLoss(dice_bce(), weight_mode="exp")
    if family == "cascade3d":
        return dice_bce()
    raise ValueError(f"unknown model family {family!r}")
