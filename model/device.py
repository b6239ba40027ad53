"""Where the networks run: CUDA when present, the CPU otherwise, and a way down when GPU memory runs out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn


class DeviceError(Exception):
    """The requested device cannot be used; the message is one line."""


class Predictor(Protocol):
    models: list[nn.Module]
    device: torch.device
    batch_size: int

    def predict(self, hu: np.ndarray, spacing_zyx: tuple[float, float, float] | None = None) -> Any: ...


def select_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; asking for CUDA without one is an error, not a silent CPU run."""
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda was asked for but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def predict_with_fallback(predictor: Predictor, hu: np.ndarray, say: Callable[[str], None],
                          spacing_zyx: tuple[float, float, float] | None = None) -> Any:
    """Run the predictor; on CUDA out-of-memory halve the batch, and below one move to the CPU.

    A smaller GPU than the one the defaults were chosen for (a T4 instead of an A10G) then costs
    time instead of the case. Each step down is reported through ``say`` and kept for later cases.
    """
    while True:
        try:
            return predictor.predict(hu, spacing_zyx)
        except torch.OutOfMemoryError:
            if predictor.device.type != "cuda":
                raise
            torch.cuda.empty_cache()
            if predictor.batch_size > 1:
                predictor.batch_size = max(1, predictor.batch_size // 2)
                say(f"CUDA out of memory: retrying with batch size {predictor.batch_size}")
            else:
                predictor.device = torch.device("cpu")
                predictor.models = [model.to(predictor.device) for model in predictor.models]
                say("CUDA out of memory at batch size 1: continuing on the CPU")
