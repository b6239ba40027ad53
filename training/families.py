"""Training's half of the family registry (:mod:`model.families` has the network and inference half):
each family's loss, dataset, optimiser defaults and the checkpoint folders of one fold.

Keyed by the same names; nothing else in training tells the families apart by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from monai.losses import DeepSupervisionLoss
from torch import nn

from model.families import CASCADE3D, SEGRESNET2D, Family, family
from training.data import PatchDataset, SliceDataset
from training.losses import segmentation_loss


def deep_supervision_loss(name: str = "dice_bce") -> nn.Module:
    """The 2D SegResNet's: :func:`training.losses.segmentation_loss` on every deep-supervision output,
    weighted 1, 1/2, 1/4... (MONAI's ``"exp"`` mode)."""
    return DeepSupervisionLoss(segmentation_loss(name), weight_mode="exp")


@dataclass(frozen=True)
class TrainingFamily:
    spec: Family
    loss: Callable[[str], nn.Module]  # by loss name (training.losses.LOSSES)
    dataset: type[SliceDataset] | type[PatchDataset]  # random crops (2D) or patches (3D) of cached cases
    stages: tuple[str, ...]  # checkpoint sub-folders of a fold: ("",) one network; the cascade's two stages
    lr: float
    weight_decay: float
    optimizer: str
    batch_size: int
    inference_batch_size: int  # slices or patches per network call written to a new run's config


TRAINING: dict[str, TrainingFamily] = {
    SEGRESNET2D.name: TrainingFamily(SEGRESNET2D, deep_supervision_loss, SliceDataset, ("",), lr=2e-4,
                                     weight_decay=1e-5, optimizer="adamw", batch_size=32, inference_batch_size=8),
    CASCADE3D.name: TrainingFamily(CASCADE3D, segmentation_loss, PatchDataset, ("stage1", "stage2"), lr=0.01,
                                   weight_decay=0.0, optimizer="adam", batch_size=2, inference_batch_size=2),
}


def training_family(name: str) -> TrainingFamily:
    return TRAINING[family(name).name]


def fold_dir(run: Path, fold: int, stage: str = "") -> Path:
    """``RUN/fold<k>`` (or its stage sub-folder): where one fold's checkpoints, log and curves go."""
    return run / f"fold{fold}" / stage


def training_record(run: Path, fold: int) -> Path:
    """``RUN/fold<k>/training.json``: the schedule the fold was last trained with (export records it)."""
    return fold_dir(run, fold) / "training.json"


def checkpoint_path(run: Path, fold: int, stage: str = "", which: str = "best") -> Path:
    """``RUN/fold<k>[/stage]/{best,last}.pt``, as :func:`training.loop.fit` writes them."""
    return fold_dir(run, fold, stage) / f"{which}.pt"
