"""Fold ensemble on a device: the mean haemorrhage probability of every fold for one CT volume.

Where the time goes and what is done about it (measurements: docs/speed.md, ``bench/run.py``):

- The head is found first: voxels denser than air, in connected regions at least a tenth the size
  of the largest (so the patient table, a separate thin region, is left out). Most of a CT's field
  of view is air, which the network would only spend time on: the 3D cascade runs on the whole
  volume's sliding windows that meet the head's bounding box (:mod:`model.window_grid`: the same
  windows, so the same probability on the head; ``align_windows: false`` in the manifest runs the
  windows over the head's box alone), the 2D family on each slice's own head box (the
  head narrows towards the vertex and the skull base), and slices without head are skipped. The
  probability outside is zero. The slice modes crop each slice with its neighbours' boxes included,
  and keep one slice of context beyond the head, so a slice's neighbours are the same as in the
  uncropped volume.
- A 2D crop gives the whole slice's result on the head: its box keeps ``crop_margin`` pixels of air
  and is snapped to the network's grid (SegResNetDS downsamples four times by 2, so content moved by
  a number of pixels that is not a multiple of 16 gives a different output), the network's batch
  norm uses fixed statistics (instance norm's would change with the air cropped away), and at the
  crop's sides inside the slice every convolution pads with its input's edge rather than zeros
  (:mod:`model.crop_border`): the air goes on there in the whole slice, and the shipped model then
  needs a 16-pixel margin instead of 64.
- The HU crop is copied to the device once (from pinned memory, asynchronously, on CUDA); windowing
  runs there next to the networks, fold probabilities are summed there, and only the final
  probability map comes back to the host, with no host synchronisation inside the loop.
- The 2D family pads each slice's crop with air (after the last row and column) to a multiple of
  the network's shape factor (16 for the seed's five levels), batches slices of equal padded size
  (on the CPU at most ``CPU_BATCH_PIXELS`` per call unless a batch size is given: the manifest's 8
  is a GPU's; on the 2-core EPYC a first case ran 8.3–9.0 s instead of 11.7 s at batches of 1–4,
  since every new page of a larger batch's activations is a page fault there),
  and runs one fold over every batch before the next fold, adding its probability into the crop's
  sum: memory is bounded by one batch whatever the volume's depth, and a fold's Winograd weights
  (below) are transformed once per case and only one fold's at a time are kept (0.4 GB at the seed
  size; per call instead, a one-slice batch ran 45 % slower). A slice's result depends only on its
  own crop, so batching never changes it.
- The 3D cascade runs MONAI sliding-window inference with Gaussian blending, ``batch_size`` patches
  per call, stage 1 over the windows that meet stage 2's crop, then stage 2 on the image plus stage
  1's probability. With the mirror view on, the flipped crop's windows are not the flipped volume's,
  so only the plain view is exact.
- The 2D family runs in ``channels_last`` layout: the layout tensor cores want, and on the CPU 27 %
  faster for the shipped network and 14 % for the seed's (batch norm; with instance norm it was
  not, because of layout copies around every norm). Each residual block's second batch norm is
  folded into the convolution before it (:func:`model.networks.for_inference`). Precision and
  convolution algorithm follow :mod:`model.compute`: fp16 autocast on CUDA, bf16 autocast on a CPU
  with native bf16 where the manifest allows it, else fp32, with the wide 3×3 convolutions by
  Winograd's algorithm (:mod:`model.winograd`) on AVX2 CPUs (the seed-size network ran 1.3–1.4×
  faster on an EPYC). With ``inference.recheck_margin`` (set at export where plain bf16 missed the
  fp32 mask rule), 2D slices whose bf16/fp16 probability comes that near the threshold are computed
  again in fp32.

Optional mirror test-time augmentation averages in the left–right flipped prediction.

With the manifest's ``inference.brain_hu`` a scan whose brain lies outside the trained levels is
first shifted into them (:mod:`model.calibration`). With ``inference.slab_mm`` much thinner slices
are then averaged to the trained slice thickness, and with ``inference.spacing_zyx`` the case is
resampled to the spacing the folds were trained at and the probability brought back to the input
grid (:mod:`model.spacing`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from model.bf16_check import checked_path
from model.calibration import brain_level, hu_shift
from model.compute import ComputePath, path_for_weights, set_cuda_convolutions
from model.crop_border import CropBorderPadding, Sides, crop_sides
from model.head import bounding_box, head_mask, relative, slice_boxes
from model.networks import for_inference
from model.overlap import mean_pairwise_dice
from model.settings import PatchInference
from model.spacing import parse_spacing, resize, slab_average, spacing_after, target_shape, voxel_ml
from model.weights import Manifest
from model.window_grid import aligned_crop
from model.windowing import CHANNELS, SLICE_CONTEXT, neighbour_span, window_slices, window_volume
from model.winograd import transformed_weights, use_winograd

PAD_HU = -1024.0  # what a crop is padded with: air
CPU_BATCH_PIXELS = 2 * 512 * 512  # a CPU network call's slices hold at most this many pixels (docs/speed.md)


@dataclass(frozen=True)
class Prediction:
    """The ensemble's probability, and how far its folds agree (results.json's review flag uses it).

    Each fold's own mask is its probability (mirror views averaged) at the manifest's threshold, on
    the grid the networks ran on; no post-processing.
    """

    prob: np.ndarray  # (Z, Y, X) float32 on the input grid
    fold_voxels: tuple[int, ...]  # voxels each fold's own mask holds
    fold_dice: float  # mean pairwise Dice of the fold masks; 1.0 where both of a pair are empty
    voxel_ml: float | None  # of the grid the folds ran on (None when the spacing was not given)
    rechecked: int = 0  # slices computed again in fp32 (``inference.recheck_margin``)
    slab_mm: float | None = None  # the slab thin slices were averaged to first (None: used as they are)
    hu_shift: float = 0.0  # HU subtracted first to bring the brain into the trained range (model.calibration)

    @property
    def fold_ml(self) -> tuple[float, ...] | None:
        return None if self.voxel_ml is None else tuple(round(v * self.voxel_ml, 4) for v in self.fold_voxels)


def _on_crop(model: nn.Module, border: CropBorderPadding, sides: Sides) -> Callable[[torch.Tensor, bool], torch.Tensor]:
    """``model`` on a crop whose inner ``sides`` are edge-padded (left and right swap in a flipped view)."""
    def run(inputs: torch.Tensor, flipped: bool) -> torch.Tensor:
        with border.inner(sides.mirrored() if flipped else sides):
            return model(inputs)
    return run


class EnsemblePredictor:
    """Mean probability of the fold models of one weights manifest."""

    def __init__(self, models: list[nn.Module], manifest: Manifest, device: torch.device,
                 mirror: bool | None = None, batch_size: int | None = None, winograd: bool | None = None,
                 path: ComputePath | None = None) -> None:
        """``path``: precision and algorithm (default: :func:`model.compute.path_for_weights` for ``device``
        and the manifest); ``winograd`` overrides the path's choice of Winograd."""
        self.path = path or path_for_weights(device, "auto", manifest.inference)
        set_cuda_convolutions(self.path)
        self.models = [for_inference(model) for model in models]  # the callers' models stay as they are
        self.manifest = manifest
        self.device = device
        settings = manifest.inference
        self.mirror = bool(settings.mirror if mirror is None else mirror)
        self.batch_size = int(batch_size or settings.batch_size)
        # the manifest's batch is sized for a GPU; on the CPU a smaller one touches less new memory per case
        self.batch_pixels = CPU_BATCH_PIXELS if device.type == "cpu" and batch_size is None else None
        self.crop_margin = settings.crop_margin
        self.spacing = parse_spacing(settings.spacing_zyx)
        self.slice_wise = manifest.spec.slice_wise
        self.views = len(self.models) * (2 if self.mirror else 1)  # probabilities summed per voxel
        self.factor = tuple(self.models[0].shape_factor())  # sizes the networks accept are multiples of it
        if self.slice_wise:
            for model in self.models:
                model.to(memory_format=torch.channels_last)
        self.path = checked_path(self.path, self.models[0], self._typical_input())  # bf16 only where right here
        winograd = self.path.winograd and device.type == "cpu" if winograd is None else winograd
        if self.slice_wise and winograd:
            for model in self.models:
                use_winograd(model)
        self.borders = [CropBorderPadding(model) for model in self.models] if self.slice_wise else []

    def _typical_input(self) -> torch.Tensor:
        """One network input of a typical shape, for :func:`model.bf16_check.checked_path`: a slice of a
        head's 0.9 mm crop (256²), or one 3D window."""
        channels = CHANNELS[self.manifest.input_mode]
        if self.slice_wise:
            return torch.zeros(1, channels, 256, 256).contiguous(memory_format=torch.channels_last)
        return torch.zeros(1, channels, *self.manifest.inference.roi_size)

    def _reduced_dtype(self) -> torch.dtype | None:
        """The path's autocast dtype; none once an out-of-memory fallback moved a CUDA path to the CPU."""
        return self.path.autocast_dtype if self.path.device == self.device.type else None

    @property
    def recheck_margin(self) -> float:
        """The manifest's ``recheck_margin`` where it applies (2D on a reduced-precision path), else 0."""
        reduced = self.slice_wise and self._reduced_dtype() is not None
        return self.manifest.inference.recheck_margin if reduced else 0.0

    def _autocast(self, exact: bool = False) -> torch.autocast:
        """The path's autocast, or (``exact``) none."""
        dtype = None if exact else self._reduced_dtype()
        return torch.autocast(device_type=self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

    def _to_device(self, hu: np.ndarray) -> torch.Tensor:
        """Host → device once per case; pinned and asynchronous on CUDA."""
        host = torch.from_numpy(hu)
        if self.device.type != "cuda":
            return host.to(self.device)
        return host.pin_memory().to(self.device, non_blocking=True)

    def _views(self, x: torch.Tensor, run: Callable[[torch.Tensor, bool], torch.Tensor]) -> torch.Tensor:
        """Sum of sigmoid probabilities over the original and, with mirroring, the flipped view.

        ``run(inputs, flipped)`` gives the logits; ``flipped`` says the inputs are mirrored left–right.
        """
        prob = torch.sigmoid(run(x, False).float())
        if self.mirror:
            prob += torch.sigmoid(run(x.flip(-1), True).float()).flip(-1)
        return prob

    def __call__(self, hu: np.ndarray, spacing_zyx: tuple[float, float, float] | None = None) -> np.ndarray:
        """(Z, Y, X) Hounsfield units → (Z, Y, X) float32 probability of haemorrhage (see :meth:`predict`)."""
        return self.predict(hu, spacing_zyx).prob

    @torch.inference_mode()
    def predict(self, hu: np.ndarray, spacing_zyx: tuple[float, float, float] | None = None) -> Prediction:
        """The probability and the folds' agreement.

        With ``spacing_zyx`` (mm), a brain outside the trained HU levels is shifted into them, slices
        much thinner than the manifest's ``slab_mm`` are averaged to it, and with a trained spacing the
        prediction is made at that spacing and the probability resampled back to ``hu``'s grid.
        """
        slab_mm, shift = None, 0.0
        if spacing_zyx is not None:
            trained = self.manifest.inference.brain_hu
            shift = hu_shift(brain_level(hu, spacing_zyx), trained) if trained is not None else 0.0
            if shift:
                hu = np.asarray(hu, dtype=np.float32) - np.float32(shift)
            averaged = slab_average(hu, spacing_zyx[0], self.manifest.inference.slab_mm)
            hu, slab_mm = averaged, (None if averaged is hu else self.manifest.inference.slab_mm)
        shape = hu.shape if self.spacing is None or spacing_zyx is None else \
            target_shape(hu.shape, spacing_zyx, self.spacing)
        grid_ml = None if spacing_zyx is None else voxel_ml(spacing_after(hu.shape, spacing_zyx, shape))
        if shape == hu.shape:
            prob, masks, rechecked = self._predict(hu)
        else:
            resampled = resize(torch.from_numpy(np.ascontiguousarray(hu, dtype=np.float32)), shape)
            prob, masks, rechecked = self._predict(resampled.numpy())
            prob = resize(torch.from_numpy(prob), hu.shape).clamp_(0.0, 1.0).numpy()
        voxels = tuple(int(m.sum()) for m in masks) if masks else (0,) * len(self.models)
        return Prediction(prob, voxels, mean_pairwise_dice(masks), grid_ml, rechecked, slab_mm, round(shift, 2))

    def predict_with_fallback(self, hu: np.ndarray, spacing_zyx: tuple[float, float, float] | None,
                              say: Callable[[str], None]) -> Prediction:
        """:meth:`predict`; on CUDA out-of-memory halve the batch, and below one move to the CPU.

        A smaller GPU than the one the defaults were chosen for (a T4 instead of an A10G) then costs
        time instead of the case. Each step down is reported through ``say`` and kept for later cases.
        """
        while True:
            try:
                return self.predict(hu, spacing_zyx)
            except torch.OutOfMemoryError:
                if self.device.type != "cuda":
                    raise
                torch.cuda.empty_cache()
                say(self._step_down())

    def _step_down(self) -> str:
        """Halve the batch, or at batch size 1 move the folds to the CPU; says what it did."""
        if self.batch_size > 1:
            self.batch_size = max(1, self.batch_size // 2)
            return f"CUDA out of memory: retrying with batch size {self.batch_size}"
        self.device = torch.device("cpu")
        self.models = [model.to(self.device) for model in self.models]
        return "CUDA out of memory at batch size 1: continuing on the CPU"

    def slice_plan(self, hu: np.ndarray) -> list[tuple[int, slice, slice]]:
        """The 2D family's predicted slices and their boxes (z, rows, columns on ``hu``'s grid): every
        slice of the head's box that holds head, cropped to its head and its neighbours' plus the
        margin, snapped to the network's shape factor. The one crop plan: the bench's same-input
        reference computes its baseline on exactly these boxes."""
        mask = head_mask(hu)
        box = bounding_box(mask)
        if box is None:
            return []
        context = SLICE_CONTEXT[self.manifest.input_mode]
        lo, hi = max(box[0].start - context, 0), min(box[0].stop + context, hu.shape[0])
        return [(z + lo, rows, cols) for z, rows, cols in slice_boxes(mask[lo:hi], context, self.factor,
                                                                      self.crop_margin)
                if box[0].start <= z + lo < box[0].stop]  # the context slices are not predicted

    def _predict(self, hu: np.ndarray) -> tuple[np.ndarray, list[torch.Tensor], int]:
        """Probability on ``hu``'s own grid, each fold's mask (of the region it ran on), and the
        slices computed again in fp32."""
        prob = np.zeros(hu.shape, dtype=np.float32)
        if self.slice_wise:
            boxes = self.slice_plan(hu)
            if not boxes:
                return prob, [], 0
            context = SLICE_CONTEXT[self.manifest.input_mode]
            lo, hi = max(boxes[0][0] - context, 0), min(boxes[-1][0] + 1 + context, hu.shape[0])
            rows = slice(min(b[1].start for b in boxes), max(b[1].stop for b in boxes))  # their union, on the grid
            cols = slice(min(b[2].start for b in boxes), max(b[2].stop for b in boxes))
            crop = np.ascontiguousarray(hu[lo:hi, rows, cols], dtype=np.float32)
            boxes = [(z - lo, *relative((r, c), (rows, cols)), crop_sides(r, c, *hu.shape[1:])) for z, r, c in boxes]
            prob[lo:hi, rows, cols], masks, rechecked = self._predict_2d(crop, boxes)
            return prob, masks, rechecked
        box = bounding_box(head_mask(hu))
        if box is None:
            return prob, [], 0
        settings = self.manifest.inference
        assert isinstance(settings, PatchInference)  # the 3D family's (model.families)
        second, first = box, box
        if settings.align_windows:
            second = aligned_crop(hu.shape, settings.roi_size, settings.overlap, box)
            first = aligned_crop(hu.shape, settings.roi_size, settings.overlap, second)
        prob[box], masks = self._predict_3d(np.ascontiguousarray(hu[first], dtype=np.float32),
                                            relative(second, first), relative(box, second))
        return prob, masks, 0

    def _fold_mask(self, fold_sum: torch.Tensor) -> torch.Tensor:
        """One fold's own mask from its summed views."""
        return fold_sum >= self.manifest.threshold * (self.views // len(self.models))

    def _predict_2d(self, hu: np.ndarray, boxes: list[tuple[int, slice, slice, Sides]]
                    ) -> tuple[np.ndarray, list[torch.Tensor], int]:
        """Probability of the slices in ``boxes`` (z, rows and columns of ``hu``, sides inside the
        slice), zero elsewhere; each fold's mask; and how many slices were computed again in fp32.

        On a reduced-precision path with ``inference.recheck_margin`` set, every slice whose ensemble
        probability comes within that margin of the threshold anywhere is computed again in fp32 and
        replaced: a slice's result depends only on its own crop, so those slices then hold exactly
        the fp32 result, and a voxel elsewhere can only flip where the reduced precision moved its
        probability by more than the margin.
        """
        volume = self._to_device(hu)
        out, masks = self._ensemble_2d(volume, boxes, self._autocast())
        margin = self.recheck_margin
        again = []
        if margin > 0:
            near = ((out - self.manifest.threshold).abs() < margin).flatten(1).any(dim=1)
            again = [box for box in boxes if bool(near[box[0]])]
            if again:
                exact, exact_masks = self._ensemble_2d(volume, again, self._autocast(exact=True))
                z = torch.tensor([box[0] for box in again], device=self.device)
                out[z] = exact[z]
                for mask, exact_mask in zip(masks, exact_masks, strict=True):
                    mask[z] = exact_mask[z]
        return out.cpu().numpy(), masks, len(again)

    def _ensemble_2d(self, volume: torch.Tensor, boxes: list[tuple[int, slice, slice, Sides]],
                     autocast: torch.autocast) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Mean probability over folds and views of the slices in ``boxes`` (zero elsewhere), on the
        device, under ``autocast``; and each fold's mask."""
        out = torch.zeros(volume.shape, dtype=torch.float32, device=self.device)
        masks = []
        groups: dict[tuple[int, int, Sides], list[tuple[int, slice, slice]]] = {}
        for z, rows, cols, sides in boxes:  # padded crop size and inner sides → slices of that kind
            size = tuple(-(-(s.stop - s.start) // f) * f for s, f in zip((rows, cols), self.factor, strict=True))
            groups.setdefault((*size, sides), []).append((z, rows, cols))
        batches = [(height, width, sides, members[start: start + size])
                   for (height, width, sides), members in groups.items()
                   for size in [self._batch_of(height, width)]
                   for start in range(0, len(members), size)]
        for model, border in zip(self.models, self.borders, strict=True):  # one fold over every batch, then the next
            fold = torch.zeros_like(out)
            with transformed_weights(model), autocast:
                for height, width, sides, batch in batches:
                    x = torch.stack([self._window(volume, z, rows, cols, height, width) for z, rows, cols in batch])
                    prob = self._views(x.contiguous(memory_format=torch.channels_last), _on_crop(model, border, sides))
                    for index, (z, rows, cols) in enumerate(batch):
                        fold[z, rows, cols] += prob[index, 0, : rows.stop - rows.start, : cols.stop - cols.start]
            out += fold
            masks.append(self._fold_mask(fold))
        out /= self.views
        return out, masks

    def _batch_of(self, height: int, width: int) -> int:
        """Slices of ``height`` × ``width`` per network call: the batch size, within the CPU's pixel budget."""
        if self.batch_pixels is None:
            return self.batch_size
        return max(1, min(self.batch_size, self.batch_pixels // (height * width)))

    def _window(self, volume: torch.Tensor, z: int, rows: slice, cols: slice, height: int,
                width: int) -> torch.Tensor:
        """Network input (C, height, width) of slice ``z`` cropped to its box, padded with air."""
        span = neighbour_span(z, volume.shape[0])
        crop = volume[span, rows, cols]
        crop = torch.nn.functional.pad(crop, (0, width - crop.shape[-1], 0, height - crop.shape[-2]), value=PAD_HU)
        return window_slices(crop, self.manifest.input_mode)[z - span.start]

    def _predict_3d(self, hu: np.ndarray, second: tuple[slice, ...],
                    head: tuple[slice, ...]) -> tuple[np.ndarray, list[torch.Tensor]]:
        """Stage 1 on ``hu`` (stage 1's crop), stage 2 on its part ``second``; the probability and the
        fold masks of stage 2's part ``head``."""
        settings = self.manifest.inference
        assert isinstance(settings, PatchInference)  # the 3D family's (model.families)
        roi, overlap = settings.roi_size, settings.overlap
        x = window_volume(self._to_device(hu))[None]

        def window(stage: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
            return lambda inputs: sliding_window_inference(
                inputs, roi, self.batch_size, stage, overlap=overlap, mode="gaussian")

        def mirrored(parts: tuple[slice, ...], width: int) -> tuple[slice, ...]:
            return (*parts[:-1], slice(width - parts[-1].stop, width - parts[-1].start))

        total = torch.zeros((1, 1, *(s.stop - s.start for s in head)), dtype=torch.float32, device=self.device)
        masks = []
        with self._autocast():
            for model in self.models:
                def cascade(inputs: torch.Tensor, flipped: bool, model: nn.Module = model) -> torch.Tensor:
                    part = mirrored(second, inputs.shape[-1]) if flipped else second
                    inner = mirrored(head, part[-1].stop - part[-1].start) if flipped else head
                    stage1 = torch.sigmoid(window(model.stage1)(inputs).float())
                    both = torch.cat([inputs, stage1.to(inputs.dtype)], dim=1)[(..., *part)]
                    return window(model.stage2)(both)[(..., *inner)]
                fold = self._views(x, cascade)
                total += fold
                masks.append(self._fold_mask(fold[0, 0]))
        return (total[0, 0] / self.views).cpu().numpy(), masks
