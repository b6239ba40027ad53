"""Training data: cached canonical arrays, and the 2D slice and 3D patch datasets with MONAI augmentation.

Every case is read with :func:`model.io.read_image` and turned with :func:`model.io.to_canonical`
exactly as ``process.py`` does, then cached as ``.npy`` (HU and a 0/1 label) so later epochs and
runs skip the NIfTI decoding. Windowing uses :mod:`model.windowing`, the functions inference uses,
on the fly: the network sees during training what it will see in the container.

Samples are a pure function of ``(seed, epoch, index)``: case, slice, crop and augmentation are
drawn from a generator seeded by that triple. So a resumed run draws the samples the uninterrupted
run would have drawn, data-loader workers need no seed juggling, and a multi-process run (each rank
taking every world-size-th index of one permutation) sees exactly the samples a single process sees.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from monai import transforms as mt
from scipy import ndimage
from torch.utils.data import Dataset

from model.atomic import atomic_path
from model.head import HEAD_HU
from model.io import CaseError, read_image, to_canonical
from model.postprocess import CONNECTIVITY
from model.spacing import Spacing, spacing_after, to_spacing
from model.windowing import SLICE_CONTEXT, neighbour_span, window_slices, window_volume
from training.splits import TrainCase

CACHE_VERSION = 2


@dataclass(frozen=True)
class CachedCase:
    """A case's canonical arrays on disk and what sampling needs to know about them."""

    name: str
    hu_path: Path
    label_path: Path
    spacing_zyx: tuple[float, float, float]
    foreground_slices: tuple[int, ...]
    head_slices: tuple[int, ...]

    def hu(self) -> np.ndarray:
        return np.load(self.hu_path, mmap_mode="r")

    def label(self) -> np.ndarray:
        return np.load(self.label_path, mmap_mode="r")


def _key(case: TrainCase, spacing: Spacing | None) -> str:
    """Cache key: both files' absolute paths, sizes and modification times (a changed file is re-read),
    and the spacing the arrays are resampled to."""
    parts: list = [CACHE_VERSION, spacing]
    for path in (case.image, case.label):
        stat = path.stat()
        parts += [str(path.resolve()), stat.st_size, stat.st_mtime_ns]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def canonical_arrays(case: TrainCase) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """HU (float32) and 0/1 label (uint8) in the canonical (z, y, x) orientation, and the spacing (z, y, x)."""
    image = to_canonical(read_image(case.image))
    label = to_canonical(read_image(case.label))
    hu = sitk.GetArrayFromImage(image).astype(np.float32)
    mask = (sitk.GetArrayFromImage(label) > 0).astype(np.uint8)
    if hu.shape != mask.shape:
        raise CaseError(f"{case.label}: label shape {mask.shape[::-1]} differs from image shape {hu.shape[::-1]}")
    return hu, mask, tuple(float(s) for s in image.GetSpacing()[::-1])


def cache_case(case: TrainCase, cache_dir: Path, spacing_zyx: Spacing | None = None) -> CachedCase:
    """Read the case once and keep its canonical arrays as ``.npy`` (int16 HU when lossless).

    With ``spacing_zyx`` the arrays are resampled to it as the predictor resamples a case
    (:mod:`model.spacing`; the label by the same interpolation, kept where it reaches 0.5), so the
    networks train on the pixel size they will predict at.
    """
    folder = cache_dir / f"{case.name}-{_key(case, spacing_zyx)}"
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        hu, mask, spacing = canonical_arrays(case)
        if spacing_zyx is not None:
            shape = hu.shape
            hu = np.rint(to_spacing(hu, spacing, spacing_zyx))
            mask = (to_spacing(mask.astype(np.float32), spacing, spacing_zyx) >= 0.5).astype(np.uint8)
            spacing = spacing_after(shape, spacing, hu.shape)
        folder.mkdir(parents=True, exist_ok=True)
        integral = np.array_equal(hu, np.rint(hu)) and hu.min() >= -32768 and hu.max() <= 32767
        np.save(folder / "hu.npy", hu.astype(np.int16) if integral else hu)
        np.save(folder / "label.npy", mask)
        meta = {"spacing_zyx": list(spacing),
                "foreground_slices": np.flatnonzero(mask.any(axis=(1, 2))).tolist(),
                "head_slices": np.flatnonzero((hu > HEAD_HU).any(axis=(1, 2))).tolist() or list(range(len(hu)))}
        with atomic_path(meta_path) as tmp:  # written last: a present meta.json means a complete cache entry
            tmp.write_text(json.dumps(meta))
    meta = json.loads(meta_path.read_text())
    return CachedCase(case.name, folder / "hu.npy", folder / "label.npy", tuple(meta["spacing_zyx"]),
                      tuple(meta["foreground_slices"]), tuple(meta["head_slices"]))


def slice_input(hu: np.ndarray, z: int, mode: str, noise_hu: float = 0.0,
                rng: np.random.Generator | None = None, offset_hu: float = 0.0) -> torch.Tensor:
    """Network input (C, Y, X) of slice ``z``: windowed with the slice below and above, as inference does.

    ``noise_hu``: Gaussian noise of that SD added in Hounsfield units before windowing (the same noise
    in every window, as a noisier scan would give). ``offset_hu``: a constant added to every voxel
    before windowing, as another scanner's calibration moves the whole scan.
    """
    span = neighbour_span(z, hu.shape[0])
    stack = np.array(hu[span], dtype=np.float32) + np.float32(offset_hu)  # a copy: the cache is read-only
    if noise_hu > 0 and rng is not None:
        stack = stack + rng.normal(0.0, noise_hu, stack.shape).astype(np.float32)
    return window_slices(torch.from_numpy(stack), mode)[z - span.start]


def crop_centres(hu: np.ndarray, label: np.ndarray) -> dict[str, np.ndarray]:
    """Flat indices a crop may centre on: blood (``fg``), and head tissue without blood (``bg``; every
    other voxel when the slice or volume holds no tissue, so a crop can always be drawn)."""
    blood = label.ravel() > 0
    tissue = (hu.ravel() > HEAD_HU) & ~blood
    return {"fg": np.flatnonzero(blood), "bg": np.flatnonzero(tissue if tissue.any() else ~blood)}


@dataclass(frozen=True)
class Augment:
    """Augmentation strengths (SPEC §2, second seed); ``enabled=False`` gives crops only."""

    enabled: bool = True
    rotate_deg: float = 15.0
    scale: float = 0.15
    affine_prob: float = 0.3
    noise_std: float = 0.02
    intensity_scale: float = 0.1
    intensity_shift: float = 0.05
    noise_hu: float = 6.0  # largest SD of the HU noise added (half the samples): resampling to a coarser
    # training grid averages a thin-pixel scan's noise away, natively coarse scans keep theirs
    offset_hu: float = 0.0  # largest whole-sample HU offset (half the samples, uniform in +-offset_hu):
    # scanners differ in calibration by several HU, and a model that judges blood by absolute HU paints a
    # brighter scan's brain (README, "Scanner calibration and noise"); 0 keeps the sample stream unchanged
    scanner: bool = False  # nnU-Net's gamma, sharpening and simulated low resolution besides MONAI's defaults:
    # heads and scanners the training cases do not cover differ in contrast, kernel and resolution
    lone_slice: float = 0.1  # share of slice-context inputs (slices3, combined9) shown without their
    # neighbours (replicated, as a one-slice input and a volume's first and last slice give them)


def _augmentations(spatial_dims: int, aug: Augment, keys: list[str]) -> list[mt.Transform]:
    """Flips on every spatial axis, rotation (in-plane) and scaling, then intensity changes of the image only."""
    if not aug.enabled:
        return []
    rotate = np.deg2rad(aug.rotate_deg)
    flips = [mt.RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(spatial_dims)]
    modes = tuple("nearest" if key == "label" else "bilinear" for key in keys)
    return [
        *flips,
        mt.RandAffined(keys, prob=aug.affine_prob, mode=modes, padding_mode="zeros",
                       rotate_range=(rotate,) if spatial_dims == 2 else (rotate, 0.0, 0.0),  # about z: in-plane
                       scale_range=(aug.scale,) * spatial_dims),
        mt.RandGaussianNoised("image", prob=0.15, std=aug.noise_std),
        mt.RandGaussianSmoothd("image", sigma_x=(0.25, 1.0), sigma_y=(0.25, 1.0), sigma_z=(0.25, 1.0), prob=0.15),
        mt.RandScaleIntensityd("image", factors=aug.intensity_scale, prob=0.3),
        mt.RandShiftIntensityd("image", offsets=aug.intensity_shift, prob=0.3),
        *(_scanner_augmentations(spatial_dims) if aug.scanner else []),
    ]


def _scanner_augmentations(spatial_dims: int) -> list[mt.Transform]:
    """Contrast (gamma), a sharper kernel and a coarser acquisition, with nnU-Net's probabilities."""
    return [
        mt.RandAdjustContrastd("image", prob=0.3, gamma=(0.7, 1.5)),
        mt.RandGaussianSharpend("image", prob=0.15),
        mt.RandSimulateLowResolutiond("image", prob=0.15, zoom_range=(0.5, 1.0),
                                      upsample_mode="bilinear" if spatial_dims == 2 else "trilinear"),
    ]


def draw_offset(largest_hu: float, rng: np.random.Generator) -> float:
    """A whole-sample HU offset: uniform in +-``largest_hu`` for half the samples, else 0; draws nothing
    when ``largest_hu`` is 0, so runs without it keep their sample stream."""
    if largest_hu <= 0 or rng.random() >= 0.5:
        return 0.0
    return float(rng.uniform(-largest_hu, largest_hu))


class _SeededDataset(Dataset):
    """Index-seeded sampling shared by both datasets (see the module docstring)."""

    def __init__(self, cases: list[CachedCase], length: int, seed: int, foreground_fraction: float) -> None:
        if not cases:
            raise ValueError("no training cases")
        self.cases = cases
        self.length = length
        self.seed = seed
        self.epoch = 0
        self.foreground_fraction = foreground_fraction

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def _run(self, transform: mt.Compose, data: dict, rng: np.random.Generator) -> dict:
        transform.set_random_state(seed=int(rng.integers(2**31)))
        with warnings.catch_warnings():  # a crop from a slice without blood: MONAI warns, then crops background
            warnings.simplefilter("ignore", UserWarning)
            out = transform(data)
        out = out[0] if isinstance(out, list) else out
        return {k: torch.as_tensor(v).float().contiguous() for k, v in out.items() if k not in ("fg", "bg")}


def lesion_slices(label: np.ndarray) -> tuple[tuple[int, ...], ...]:
    """The slices of each bleed: each 26-connected component of the (Z, Y, X) label, its slice indices."""
    components, _ = ndimage.label(label > 0, structure=CONNECTIVITY)  # post-processing's components
    return tuple(tuple(range(box[0].start, box[0].stop)) for box in ndimage.find_objects(components) if box)


class SliceDataset(_SeededDataset):
    """2D SegResNet samples: a slice (holding blood with probability ``foreground_fraction``), windowed,
    padded to at least ``crop``, cropped around blood (2 of 3 crops) or head tissue, and augmented."""

    def __init__(self, cases: list[CachedCase], mode: str, crop: tuple[int, int], length: int, seed: int = 0,
                 foreground_fraction: float = 0.5, augment: Augment | None = None,
                 balance_lesions: bool = False) -> None:
        """``foreground_fraction`` is 0.5: the other half are blood-free slices of every head (skull base,
        vertex, face), where a model that has seen too few of them paints bone edges and soft tissue.

        ``balance_lesions``: a blood slice is drawn as one of the case's bleeds, then one of that bleed's
        slices, so a 0.1 mL bleed on one slice is drawn as often as a 60 mL one on twelve; drawing blood
        slices uniformly shows the network large bleeds far more often than the small ones it misses."""
        super().__init__(cases, length, seed, foreground_fraction)
        self.lesions = {case.name: lesion_slices(np.asarray(case.label())) for case in cases} \
            if balance_lesions else None
        self.mode = mode
        augment = augment or Augment()
        self.noise_hu = augment.noise_hu if augment.enabled else 0.0
        self.offset_hu = augment.offset_hu if augment.enabled else 0.0
        self.lone_slice = augment.lone_slice if augment.enabled and SLICE_CONTEXT[mode] else 0.0
        keys = ["image", "label"]
        self.transform = mt.Compose([
            mt.RandCropByPosNegLabeld(keys, "label", spatial_size=crop, pos=2, neg=1, allow_smaller=True,
                                      fg_indices_key="fg", bg_indices_key="bg"),
            mt.SpatialPadd(keys, spatial_size=crop, value=0),
            *_augmentations(2, augment, keys),
        ])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = self._rng(index)
        case = self.cases[int(rng.integers(len(self.cases)))]
        use_blood = case.foreground_slices and rng.random() < self.foreground_fraction
        slices = case.foreground_slices if use_blood else case.head_slices
        if use_blood and self.lesions is not None:
            lesions = self.lesions[case.name]
            slices = lesions[int(rng.integers(len(lesions)))]
        z = int(slices[int(rng.integers(len(slices)))])
        label = np.asarray(case.label()[z])
        noise = float(rng.uniform(0.0, self.noise_hu)) if rng.random() < 0.5 else 0.0
        lone = self.lone_slice > 0 and rng.random() < self.lone_slice  # windows3 draws nothing: same stream
        offset = draw_offset(self.offset_hu, rng)
        image = slice_input(case.hu()[z: z + 1], 0, self.mode, noise, rng, offset) if lone \
            else slice_input(case.hu(), z, self.mode, noise, rng, offset)
        data = {"image": image,
                "label": torch.from_numpy(label.astype(np.float32))[None],
                **crop_centres(np.asarray(case.hu()[z]), label)}
        return self._run(self.transform, data, rng)


class PatchDataset(_SeededDataset):
    """3D cascade samples: a patch cropped from the HU volume around blood (2 of 3) or head tissue, then
    windowed (``windows3`` needs no neighbours, so cropping first changes nothing), padded with air and
    augmented. With ``stage1_probs`` (case name → out-of-fold stage-1 probability file) the probability
    is cropped along and appended as the last channel: stage 2's input."""

    def __init__(self, cases: list[CachedCase], patch: tuple[int, int, int], length: int, seed: int = 0,
                 foreground_fraction: float = 0.67, augment: Augment | None = None,
                 stage1_probs: dict[str, Path] | None = None) -> None:
        super().__init__(cases, length, seed, foreground_fraction)
        self.stage1_probs = stage1_probs
        augment = augment or Augment()
        self.offset_hu = augment.offset_hu if augment.enabled else 0.0
        keys = ["image", "label", "prob"] if stage1_probs else ["image", "label"]
        self.transform = mt.Compose([
            mt.RandCropByPosNegLabeld(keys, "label", spatial_size=patch, pos=2, neg=1, allow_smaller=True,
                                      fg_indices_key="fg", bg_indices_key="bg"),
            mt.Lambdad("image", lambda hu: window_volume(torch.as_tensor(hu)[0])),
            mt.SpatialPadd(keys, spatial_size=patch, value=0),
            *_augmentations(3, augment, keys),
        ])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = self._rng(index)
        case = self.cases[int(rng.integers(len(self.cases)))]
        hu, label = np.asarray(case.hu(), dtype=np.float32), np.asarray(case.label())
        offset = draw_offset(self.offset_hu, rng)  # to the HU, so windowed with it
        image = hu[None] + np.float32(offset) if offset else hu[None]  # no second volume copy unshifted
        data = {"image": image, "label": label[None].astype(np.float32), **crop_centres(hu, label)}
        if self.stage1_probs:
            data["prob"] = np.load(self.stage1_probs[case.name])[None]
        out = self._run(self.transform, data, rng)
        if self.stage1_probs:  # moved with the image by flips and affine, but not by intensity changes
            out["image"] = torch.cat([out["image"], out.pop("prob")])
        return out
