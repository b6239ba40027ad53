"""Fold ensemble on a device: the mean haemorrhage probability of every fold for one CT volume.

Where the time goes and what is done about it (measurements: docs/speed.md, ``bench/run.py``):

- The volume is cropped to the head's bounding box first (most of a CT's field of view is air,
  which the network would only spend time on); slices above and below the head are skipped and the
  probability outside the box is zero. The slice modes keep one slice of context on each side of
  the box, so a slice's neighbours are the same as in the uncropped volume.
- The HU crop is copied to the device once (from pinned memory, asynchronously, on CUDA); windowing
  runs there next to the networks, fold probabilities are summed there, and only the final
  probability map comes back to the host, with no host synchronisation inside the loop.
- The 2D family runs batches of slices through every fold before moving on, so each batch is
  windowed once and memory is bounded by one batch whatever the volume's depth (edge slices of a
  batch read their neighbours from the volume, so batching never changes the result).
- The 3D cascade runs MONAI sliding-window inference with Gaussian blending, ``batch_size`` patches
  per call, stage 1 over the whole crop, then stage 2 on the image plus stage 1's probability.
- On CUDA the networks run under fp16 autocast, the 2D family in ``channels_last`` layout (the
  layout tensor cores want). On CPU both stay off: bf16 autocast was 8–80× slower on a CPU without
  native bf16, and ``channels_last`` gave no consistent gain there while adding layout copies around
  every instance norm (docs/speed.md).

Optional mirror test-time augmentation averages in the left–right flipped prediction.
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
SLICE_CONTEXT = {"windows3": 0, "slices3": 1, "combined9": 1}  # neighbour slices each input reads


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
        if device.type == "cuda" and manifest.family == "segresnet2d":
            for model in models:
                model.to(memory_format=torch.channels_last)

    def _autocast(self) -> torch.autocast:
        return torch.autocast(device_type=self.device.type, dtype=torch.float16,
                              enabled=self.device.type == "cuda")

    def _to_device(self, hu: np.ndarray) -> torch.Tensor:
        """Host → device once per case; pinned and asynchronous on CUDA."""
        host = torch.from_numpy(hu)
        if self.device.type != "cuda":
            return host.to(self.device)
        return host.pin_memory().to(self.device, non_blocking=True)

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
        if self.manifest.family == "segresnet2d":
            context = SLICE_CONTEXT[self.manifest.input_mode]
            lo, hi = max(box[0].start - context, 0), min(box[0].stop + context, hu.shape[0])
            crop = np.ascontiguousarray(hu[lo:hi, box[1], box[2]], dtype=np.float32)
            prob[box] = self._predict_2d(crop, box[0].start - lo, box[0].stop - lo)
        else:
            prob[box] = self._predict_3d(np.ascontiguousarray(hu[box], dtype=np.float32))
        return prob

    def _predict_2d(self, hu: np.ndarray, first: int, stop: int) -> np.ndarray:
        """Probability of slices ``first:stop`` of ``hu``; the slices around them are context only."""
        height, width = hu.shape[1:]
        volume = _pad_to_multiple(self._to_device(hu), tuple(self.models[0].shape_factor()))
        out = torch.empty((stop - first, *volume.shape[1:]), dtype=torch.float32, device=self.device)
        views = len(self.models) * (2 if self.mirror else 1)
        for start in range(first, stop, self.batch_size):
            end = min(start + self.batch_size, stop)
            lo, hi = max(start - 1, 0), min(end + 1, volume.shape[0])  # neighbours for the slice modes
            x = window_slices(volume[lo:hi], self.manifest.input_mode)[start - lo: end - lo]
            x = x.contiguous(memory_format=torch.channels_last) if self.device.type == "cuda" else x
            total = torch.zeros((end - start, 1, *x.shape[2:]), dtype=torch.float32, device=self.device)
            with self._autocast():
                for model in self.models:
                    total += self._views(x, model)
            out[start - first: end - first] = total[:, 0] / views
        return out[:, :height, :width].cpu().numpy()

    def _predict_3d(self, hu: np.ndarray) -> np.ndarray:
        roi = tuple(int(v) for v in self.manifest.inference.get("roi_size", (16, 192, 192)))
        overlap = float(self.manifest.inference.get("overlap", 0.5))
        x = window_volume(self._to_device(hu))[None]

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
