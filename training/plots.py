"""The training curves of one fold as a PNG (training loss and validation Dice per epoch)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

from model.atomic import atomic_path

matplotlib.use("Agg")  # files only, never a window: training runs headless
import matplotlib.pyplot as plt


def plot_curves(rows: list[dict], path: Path, title: str = "") -> None:
    """Draw the rows of ``training_log.csv`` (strings or numbers) into ``path``."""
    epochs = [int(r["epoch"]) for r in rows]
    loss = [float(r["train_loss"]) for r in rows]
    dice = [(int(r["epoch"]), float(r["val_dice"])) for r in rows if not math.isnan(float(r["val_dice"]))]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(epochs, loss, marker=".")
    left.set(xlabel="epoch", ylabel="training loss (Dice + BCE)", title="loss")
    if dice:
        right.plot(*zip(*dice, strict=True), marker=".", color="tab:green")
    right.set(xlabel="epoch", ylabel="Dice", title="validation Dice", ylim=(0, 1))
    for axis in (left, right):
        axis.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
