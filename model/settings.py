"""Typed settings: the weights manifest's JSON objects parsed once into frozen dataclasses.

A dataclass's field defaults are the one place a setting's default lives; a missing key takes it, an
unknown key is an error naming the key (a misspelt ``"batchsize"`` would otherwise be ignored and the
default silently used). JSON lists become tuples, so parsed settings are hashable and cannot change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar

T = TypeVar("T")


class SettingsError(ValueError):
    """A settings object that does not fit its dataclass; the message names the key."""


def frozen(value: Any) -> Any:
    """JSON lists (at any depth) as tuples."""
    return tuple(frozen(v) for v in value) if isinstance(value, list | tuple) else value


def parse(cls: type[T], data: Mapping[str, Any] | None, where: str) -> T:
    """``cls`` from the JSON object ``data`` (``where`` names it in errors, e.g. ``"inference"``)."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise SettingsError(f"{where}: expected an object, found {type(data).__name__}")
    known = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise SettingsError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(known)})")
    return cls(**{key: frozen(value) for key, value in data.items()})


@dataclass(frozen=True)
class Inference:
    """How the predictor runs a model (manifest ``inference``): the 2D family's, and what the 3D one shares."""

    batch_size: int = 8  # slices (2D) or patches (3D) per network call
    mirror: bool = False  # average in the left–right mirrored prediction
    spacing_zyx: tuple[float | None, float | None, float | None] | None = None  # trained spacing (mm)
    slab_mm: float | None = None  # trained slice thickness (mm): much thinner slices are averaged to it first
    brain_hu: tuple[float, float] | None = None  # the training heads' brain levels (HU, model.calibration): a
    # scan whose brain lies outside is shifted into this range first
    cpu_precision: str = "fp32"  # "auto": bf16 allowed where the CPU has it natively (measured at export)
    cuda_precision: str = "fp32"  # "auto": fp16 autocast allowed on CUDA (measured at export, emulated on the CPU)
    recheck_margin: float = 0.0  # 2D on bf16/fp16: slices with a probability this near the threshold are
    # computed again in fp32 (the smallest margin whose masks met the fp32 rule, measured at export)
    review_min_fold_dice: float = 0.5  # results.json's review flag: folds agreeing less than this
    review_min_ml: float = 0.1  # ... when some fold found at least this much
    crop_margin: int = 32  # 2D: pixels of air kept around each slice's head box (measured per model at
    # export); the 3D cascade crops to the head's box and ignores it

    def __post_init__(self) -> None:
        if self.slab_mm is not None and not float(self.slab_mm) > 0:
            raise SettingsError(f"inference: slab_mm {self.slab_mm!r} must be a positive thickness in mm or null")
        if self.brain_hu is not None and not (len(self.brain_hu) == 2 and self.brain_hu[0] <= self.brain_hu[1]):
            raise SettingsError(f"inference: brain_hu {list(self.brain_hu)} must be [low, high] HU "
                                "with low <= high, or null")


@dataclass(frozen=True)
class PatchInference(Inference):
    """The 3D family's: sliding-window inference with Gaussian blending."""

    roi_size: tuple[int, int, int] = (16, 192, 192)  # patch (z, y, x)
    overlap: float = 0.5
    align_windows: bool = True  # the whole volume's windows that meet the head: the plain pipeline's
    # result on the head (model.window_grid); False: windows over the head's box alone, about half the
    # arithmetic on a 512² case and a result that does not change with the air around the head
