"""Shared test fixtures: tiny weights folders and small head-like CT volumes written to disk."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from model.weights import Manifest, build_model, write_weights

TINY = {
    "segresnet2d": {"network": {"init_filters": 4, "blocks_down": [1, 1, 1], "dsdepth": 2},
                    "inference": {"batch_size": 4}},
    "cascade3d": {"network": {"init_filters": 4, "pool_kernels": [[1, 2, 2], [2, 2, 2]]},
                  "inference": {"roi_size": [4, 32, 32], "batch_size": 2}},
}


def tiny_weights(folder: Path, family: str = "segresnet2d", input_mode: str = "windows3", folds: int = 2,
                 **overrides: object) -> Manifest:
    """A weights folder of randomly initialised tiny networks (seeded, so reproducible).

    Batch norms get random statistics and affine parameters, as after training (freshly made they
    are the identity, which would hide any mistake in how their statistics are used).
    """
    manifest = {"family": family, "input_mode": input_mode, **TINY[family], **overrides}
    probe = Manifest.from_dict({**manifest, "folds": [{"file": "-", "sha256": "-"}]})
    states = []
    for fold in range(folds):
        torch.manual_seed(fold)
        model = build_model(probe)
        with torch.no_grad():
            for norm in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
                norm.running_mean.normal_(0.0, 0.5)
                norm.running_var.uniform_(0.5, 2.0)
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.normal_(0.0, 0.2)
        states.append(model.state_dict())
    return write_weights(folder, manifest, states)


def head_volume(shape: tuple[int, int, int] = (10, 64, 56), seed: int = 0) -> np.ndarray:
    """int16 HU (z, y, x): air, a skull ring, brain, and an asymmetric 70 HU bleed on one side."""
    rng = np.random.default_rng(seed)
    _, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    r = ((y - shape[1] / 2) / (shape[1] * 0.4)) ** 2 + ((x - shape[2] / 2) / (shape[2] * 0.4)) ** 2
    hu = np.full(shape, -1000.0)
    hu[np.broadcast_to(r < 1.0, shape)] = 1200.0
    hu[np.broadcast_to(r < 0.8, shape)] = 32.0
    hu[2:6, shape[1] // 3: shape[1] // 2, shape[2] // 4: shape[2] // 2] = 72.0
    hu += rng.normal(0, 5, shape)
    return hu.astype(np.int16)


def ct_image(hu: np.ndarray, spacing: tuple[float, float, float] = (0.45, 0.45, 5.0),
             origin: tuple[float, float, float] = (-12.0, 30.5, 7.25),
             direction: tuple[float, ...] = (1, 0, 0, 0, 1, 0, 0, 0, 1)) -> sitk.Image:
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


@pytest.fixture
def weights_factory(tmp_path: Path) -> Callable[..., Path]:
    def make(family: str = "segresnet2d", input_mode: str = "windows3", **kwargs: object) -> Path:
        folder = tmp_path / f"weights-{family}-{input_mode}"
        tiny_weights(folder, family, input_mode, **kwargs)
        return folder
    return make
