"""Predicting a held-out case during training, through the inference code itself.

The 2D family and the full cascade go through :class:`model.predictor.EnsemblePredictor` with a
one-model "ensemble", so validation Dice measures exactly what the container will compute. Stage 1
of the cascade alone has no predictor path; :func:`stage1_probability` mirrors the predictor's
(crop to the head box, Gaussian sliding window, zero outside the box) and also makes the
out-of-fold probabilities stage 2 trains on.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from model import overlap
from model.head import head_box
from model.predictor import EnsemblePredictor
from model.weights import Manifest
from model.windowing import window_volume
from training.data import CachedCase


def dice(pred: np.ndarray, label: np.ndarray) -> float:
    """Dice of two binary volumes; NaN when the label is empty (such cases are left out of the mean)."""
    return overlap.dice(pred, label) if label.any() else math.nan


def probe_manifest(family: str, input_mode: str, network: dict, inference: dict) -> Manifest:
    """A manifest for an in-memory model (no files): what the predictor needs to run it, parsed and
    checked as a weights folder's would be."""
    return Manifest.from_dict({"family": family, "input_mode": input_mode, "network": network,
                               "inference": inference, "folds": [{"file": "in-memory", "sha256": "-"}]})


def predict_case(model: nn.Module | list[nn.Module], manifest: Manifest, case: CachedCase,
                 device: torch.device) -> np.ndarray:
    """Probability volume of one cached case from one model in eval mode (or the mean of several)."""
    models = model if isinstance(model, list) else [model]
    return EnsemblePredictor(models, manifest, device)(np.asarray(case.hu(), dtype=np.float32))


@torch.no_grad()
def stage1_probability(stage1: nn.Module, hu: np.ndarray, roi: tuple[int, int, int], overlap: float,
                       batch_size: int, device: torch.device) -> np.ndarray:
    """Stage 1's probability for a whole volume, computed as the predictor does it for stage 2."""
    prob = np.zeros(hu.shape, dtype=np.float32)
    box = head_box(hu)
    if box is None:
        return prob
    x = window_volume(torch.from_numpy(np.ascontiguousarray(hu[box], dtype=np.float32)).to(device))[None]
    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=device.type == "cuda"):
        logits = sliding_window_inference(x, roi, batch_size, stage1, overlap=overlap, mode="gaussian")
    prob[box] = torch.sigmoid(logits.float())[0, 0].cpu().numpy()
    return prob
