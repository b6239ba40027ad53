"""Fold ensemble on a device: the mean haemorrhage probability of every fold for one CT volume.

The volume is cropped to the head's bounding box first (most of a CT's field of view is air, which
the network would only spend time on) and the probability outside the box is zero. Windowing runs
on the device next to the networks, fold probabilities are summed there, and only the final
probability map comes back to the host. The 2D family runs batches of slices (edge slices of a
batch read their neighbours from the volume, so batching never changes the result); the 3D
cascade runs MONAI sliding-window inference with Gaussian blending, stage 1 over the whole crop,
then stage 2 on the image plus stage 1's probability. Optional mirror test-time augmentation
averages in the left–right flipped prediction.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from model.weights import Manifest
from model.windowing import window_slices, window_volume

HEAD_HU = -500.0  # anything denser than this is patient (or table), not air or padding
PAD_HU = -1024.0


def head_box(hu: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Bounding box of voxels denser than air; ``None`` when there are none."""
    dense = hu > HEAD_HU
    if not dense.any():
        return None
    box = []
    for axis in range(3):
        present = np.flatnonzero(dense.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)


def _pad_to_multiple(hu: torch.Tensor, factor: tuple[int, int]) -> torch.Tensor:
    """Pad the last two axes with air up to a multiple of ``factor`` (the network's shape factor)."""
    pad_y = -hu.shape[-2] % factor[0]
    pad_x = -hu.shape[-1] % factor[1]
    return torch.nn.functional.pad(hu, (0, pad_x, 0, pad_y), value=PAD_HU)


class EnsemblePredictor:
    """Mean probability of the fold models of one weights manifest."""

    def __init__(self, models: list[nn.Module], manifest: Manifest, device: torch.device,
                 mirror: bool | None = None, batch_size: int | None = None) -> None:
        self.models = models
        self.manifest = manifest
        self.device = device
        self.mirror = bool(manifest.inference.get("mirror", False) if mirror is None else mirror)
        self.batch_size = int(batch_size or manifest.inference.get("batch_size", 8))

    def _autocast(self) -> torch.autocast:
        return torch.autocast(device_type=self.device.type, dtype=torch.float16,
                              enabled=self.device.type == "cuda")

    def _views(self, x: torch.Tensor, run: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Sum of sigmoid probabilities over the original and, with mirroring, the flipped view."""
        prob = torch.sigmoid(run(x).float())
        if self.mirror:
            prob += torch.sigmoid(run(x.flip(-1)).float()).flip(-1)
        return prob

    @torch.inference_mode()
    def __call__(self, hu: np.ndarray) -> np.ndarray:
        """(Z, Y, X) Hounsfield units → (Z, Y, X) float32 probability of haemorrhage."""
        prob = np.zeros(hu.shape, dtype=np.float32)
        box = head_box(hu)
        if box is None:
            return prob
        predict = self._predict_2d if self.manifest.family == "segresnet2d" else self._predict_3d
        prob[box] = predict(np.ascontiguousarray(hu[box], dtype=np.float32))
        return prob

    def _predict_2d(self, hu: np.ndarray) -> np.ndarray:
        depth, height, width = hu.shape
        volume = _pad_to_multiple(torch.from_numpy(hu).to(self.device), tuple(self.models[0].shape_factor()))
        out = torch.empty((depth, *volume.shape[1:]), dtype=torch.float32, device=self.device)
        for start in range(0, depth, self.batch_size):
            stop = min(start + self.batch_size, depth)
            lo, hi = max(start - 1, 0), min(stop + 1, depth)  # neighbours for the slice modes
            x = window_slices(volume[lo:hi], self.manifest.input_mode)[start - lo: stop - lo]
            x = x.contiguous(memory_format=torch.channels_last)
            total = torch.zeros((stop - start, 1, *x.shape[2:]), dtype=torch.float32, device=self.device)
            with self._autocast():
                for model in self.models:
                    total += self._views(x, model)
            out[start:stop] = total[:, 0] / (len(self.models) * (2 if self.mirror else 1))
        return out[:, :height, :width].cpu().numpy()

    def _predict_3d(self, hu: np.ndarray) -> np.ndarray:
        roi = tuple(int(v) for v in self.manifest.inference.get("roi_size", (16, 192, 192)))
        overlap = float(self.manifest.inference.get("overlap", 0.5))
        x = window_volume(torch.from_numpy(hu).to(self.device))[None]

        def window(stage: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
            return lambda inputs: sliding_window_inference(
                inputs, roi, self.batch_size, stage, overlap=overlap, mode="gaussian")

        total = torch.zeros((1, 1, *x.shape[2:]), dtype=torch.float32, device=self.device)
        with self._autocast():
            for model in self.models:
                def cascade(inputs: torch.Tensor, model: nn.Module = model) -> torch.Tensor:
                    stage1 = torch.sigmoid(window(model.stage1)(inputs).float())
                    return window(model.stage2)(torch.cat([inputs, stage1.to(inputs.dtype)], dim=1))
                total += self._views(x, cascade)
        return (total[0, 0] / (len(self.models) * (2 if self.mirror else 1))).cpu().numpy()
