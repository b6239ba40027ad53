"""Where the networks run: CUDA when present, the CPU otherwise (the way down when GPU memory runs out is the
predictor's: :meth:`model.predictor.EnsemblePredictor.predict_with_fallback`)."""

from __future__ import annotations

import torch


class DeviceError(Exception):
    """The requested device cannot be used; the message is one line."""


def select_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; asking for CUDA without one is an error, not a silent CPU run."""
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda was asked for but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)
