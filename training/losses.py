"""Losses of the two seeds, from MONAI: Dice + binary cross-entropy on one logit channel (which family
takes which: :mod:`training.families`).

The 2D SegResNet's deep-supervision outputs are weighted 1, 1/2, 1/4, 1/8 (MONAI's ``"exp"`` mode,
floored at 1/16 from the fifth level on) against targets downsized by nearest neighbour.
"""

from __future__ import annotations

from monai.losses import DiceCELoss


def dice_bce() -> DiceCELoss:
    """Batch soft Dice (``batch=True``: one Dice over the whole batch, as nnU-Net's batch Dice) plus BCE
    with logits. Per-sample Dice scored every blood-free crop as a separate all-or-nothing term, and one
    fold collapsed to painting nothing under it (docs/training.md); over a batch, a blood-free crop
    only adds its false positives. Under DDP the loop gathers the global batch first
    (:func:`training.distributed.gather_batch`), so N processes still train as one."""
    return DiceCELoss(sigmoid=True, batch=True)
