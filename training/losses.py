"""Losses of the two seeds, from MONAI: Dice + binary cross-entropy on one logit channel (which family
takes which: :mod:`training.families`), and optionally a Dice per bleed on top (:class:`BlobDice`).

The 2D SegResNet's deep-supervision outputs are weighted 1, 1/2, 1/4, 1/8 (MONAI's ``"exp"`` mode,
floored at 1/16 from the fifth level on) against targets downsized by nearest neighbour.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.losses import DiceCELoss
from scipy import ndimage
from torch import nn

LOSSES = ("dice_bce", "blob")


def dice_bce() -> DiceCELoss:
    """Batch soft Dice (``batch=True``: one Dice over the whole batch, as nnU-Net's batch Dice) plus BCE
    with logits. Per-sample Dice scored every blood-free crop as a separate all-or-nothing term, and one
    fold collapsed to painting nothing under it (docs/training.md); over a batch, a blood-free crop
    only adds its false positives. Under DDP the loop gathers the global batch first
    (:func:`training.distributed.gather_batch`), so N processes still train as one."""
    return DiceCELoss(sigmoid=True, batch=True)


class BlobDice(nn.Module):
    """:func:`dice_bce` plus the mean over every bleed in the batch of its own soft Dice loss ("blob
    loss", Kofler et al., 2023), so a 10-pixel bleed weighs as much as a 10,000-pixel one.

    A batch Dice and a voxel-wise cross-entropy are both dominated by the largest bleed in the batch;
    a small bleed costs almost nothing to miss. Each bleed (a connected component of the target, per
    sample) is scored on its sample with the other bleeds masked out: Dice_c = 2·S_c / (S_0 + S_c + N_c),
    where S_c is the predicted probability summed over the bleed, S_0 over the background and N_c the
    bleed's size, so false positives anywhere in the sample still count against it. MONAI has no
    instance-wise loss, hence written here; components come from SciPy on the CPU (the target is small).
    """

    def __init__(self) -> None:
        super().__init__()
        self.base = dice_bce()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.base(logits, target)
        prob = torch.sigmoid(logits.float())
        terms = []
        for sample, labels in zip(prob, target.detach().cpu().numpy() > 0.5, strict=True):
            components, count = ndimage.label(labels[0])  # face-connected, SciPy's default
            if count == 0:
                continue
            index = torch.from_numpy(components.astype(np.int64)).to(prob.device).flatten()
            sums = torch.zeros(count + 1, device=prob.device).index_add(0, index, sample[0].flatten())
            sizes = torch.bincount(index, minlength=count + 1).to(sums.dtype)
            terms.append(1 - 2 * sums[1:] / (sums[0] + sums[1:] + sizes[1:]))
        if not terms:
            return loss
        return loss + torch.cat(terms).mean()


def segmentation_loss(name: str = "dice_bce") -> nn.Module:
    """The loss called ``name`` (one of :data:`LOSSES`)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; one of {', '.join(LOSSES)}")
    return BlobDice() if name == "blob" else dice_bce()
