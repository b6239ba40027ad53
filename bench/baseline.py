"""The straightforward pipeline a MONAI user would write, as the benchmark's baseline.

Window the whole uncropped volume on the host, then per fold: move it to the device and run
``sliding_window_inference`` with its defaults (one window per network call, fp32, contiguous
layout), sigmoid, bring the probability back, average. The 2D family's window is the whole slice
(every slice of the volume is one batch item); the 3D cascade uses the manifest's patch size,
overlap and Gaussian blending, since those define its result, stage 1 then stage 2.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from model.settings import PatchInference
from model.weights import Manifest
from model.windowing import window_slices, window_volume


@torch.no_grad()
def baseline_probability(models: list[nn.Module], manifest: Manifest, hu: np.ndarray,
                         device: torch.device, mirror: bool = False) -> np.ndarray:
    """(Z, Y, X) HU → (Z, Y, X) mean fold probability, computed the plain way."""
    volume = torch.from_numpy(hu.astype(np.float32))
    if manifest.spec.slice_wise:
        factor = models[0].shape_factor()  # a whole slice, rounded up to what the network accepts
        inputs = window_slices(volume, manifest.input_mode)
        roi = tuple(-(-n // f) * f for n, f in zip(hu.shape[1:], factor, strict=True))
        overlap, mode = 0.25, "constant"
    else:
        inputs = window_volume(volume)[None]
        assert isinstance(manifest.inference, PatchInference)  # the 3D family's
        roi, overlap, mode = manifest.inference.roi_size, manifest.inference.overlap, "gaussian"

    def infer(x: torch.Tensor, network: nn.Module) -> torch.Tensor:
        return sliding_window_inference(x, roi, 1, network, overlap=overlap, mode=mode)

    def predict(x: torch.Tensor, model: nn.Module) -> torch.Tensor:
        if manifest.spec.slice_wise:
            return torch.sigmoid(infer(x, model))
        stage1 = torch.sigmoid(infer(x, model.stage1))
        return torch.sigmoid(infer(torch.cat([x, stage1], dim=1), model.stage2))

    total = torch.zeros((*inputs.shape[:1], 1, *inputs.shape[2:]))
    for model in models:
        x = inputs.to(device)
        total += predict(x, model).cpu()
        if mirror:
            total += predict(x.flip(-1), model).flip(-1).cpu()
    total /= len(models) * (2 if mirror else 1)
    return (total[:, 0] if manifest.spec.slice_wise else total[0, 0]).numpy()
