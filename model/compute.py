"""How the networks compute on this machine: precision and convolution algorithm, chosen once at start-up.

The same container lands on different processors, and the fastest exact-enough path differs:

- CUDA: fp16 autocast (tensor cores) where the weights' manifest allows it (``cuda_precision:
  "auto"``, set at export under the same rule as bf16, fp16 emulated on the CPU), else fp32; cuDNN
  picks its convolution algorithms.
- A CPU with native bf16 (AMX or AVX512-BF16, e.g. Sapphire Rapids): bf16 autocast, oneDNN on AMX.
  On such a 2-core Xeon the seed-size network ran two 512² slices in 0.77 s against 2.25 s in fp32
  (channels_last both); on a 2-core Zen 4 EPYC (AVX512-BF16, no AMX) 0.66 s against 1.14 s. It is
  used only where the weights' manifest allows it (``cpu_precision: "auto"``), which export sets after
  measuring bf16 masks against fp32 masks out of fold (Dice ≥ 0.99, volume within 1 %:
  :func:`training.export.precision_agreement`). Where plain bf16 misses that rule, export tries
  ``inference.recheck_margin``: the 2D predictor computes every slice whose bf16 probability comes
  that near the threshold again in fp32 (:mod:`model.predictor`), so those slices are exactly fp32's;
  the smallest margin that meets the rule is kept, else fp32 is. The predictor then runs each of its
  convolutions once in bf16 and fp32 and keeps bf16 only if all agree (:mod:`model.bf16_check`).
- Any other CPU with AVX2 (and one whose bf16 path is refused): fp32, with the wide 3 × 3
  convolutions by Winograd (:mod:`model.winograd`): 1.3–1.4× for the seed-size network on an AVX2
  EPYC, and per layer 1.07× (128 channels), 1.36× (256) and 1.87× (512) against oneDNN's fp32 on the
  AVX-512 Xeon too (``bench/conv_paths.py``), where bf16 is 6–7× faster than either.
- Without AVX2: fp32 with oneDNN's own convolutions.

Without native bf16, bf16 is emulated and 8–80× slower than fp32 (measured on the EPYC), so it is
never chosen there. ``precision="fp32"`` (process.py ``--precision fp32``) forces fp32, on CUDA too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from model.settings import Inference

PRECISIONS = ("auto", "fp32")


def _cpuinfo_field(name: str) -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    for line in text.splitlines():
        if line.startswith(name):
            return line.partition(":")[2].strip()
    return ""


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    return set(_cpuinfo_field("flags").split())


def cpu_model() -> str:
    """The processor's model name, e.g. ``Intel(R) Xeon(R) Processor`` or ``AMD EPYC 7B12``."""
    import platform

    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_has_native_bf16(flags: set[str] | None = None) -> bool:
    """AMX or AVX512-BF16: bf16 matrix products in hardware."""
    return bool({"amx_bf16", "avx512_bf16"} & (cpu_flags() if flags is None else flags))


@dataclass(frozen=True)
class ComputePath:
    """The path taken, and why (logged at start-up and recorded in results.json)."""

    device: str
    precision: str  # "fp16" (CUDA autocast), "bf16" (CPU autocast) or "fp32"
    winograd: bool  # the hand-written Winograd for wide 3 × 3 convolutions (CPU, fp32 only)
    processor: str
    reason: str

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)

    def record(self) -> dict:
        return asdict(self)


def set_cuda_convolutions(path: ComputePath) -> None:
    """On a CUDA fp32 path, cuDNN convolutions in fp32: PyTorch lets them run in TF32 by default (a
    10-bit mantissa, as fp16's), which would make "fp32 on CUDA" the unmeasured reduced precision that
    the manifest refused. A process-wide switch (torch.backends), set for the path in use."""
    if path.device == "cuda":
        torch.backends.cudnn.allow_tf32 = path.precision != "fp32"


def path_for_weights(device: torch.device, precision: str, inference: Inference) -> ComputePath:
    """:func:`choose_path` with what the weights' manifest (``inference``) allows on the CPU and on CUDA."""
    return choose_path(device, precision, inference.cpu_precision, cuda_precision=inference.cuda_precision)


def choose_path(device: torch.device, precision: str = "auto", manifest_precision: str = "fp32",
                flags: set[str] | None = None, cuda_precision: str = "fp32") -> ComputePath:
    """The compute path for ``device``: ``precision`` is the user's ("auto" or "fp32"),
    ``manifest_precision`` what the weights allow on the CPU ("auto" once bf16 was measured equal),
    ``cuda_precision`` what they allow on CUDA ("auto" once fp16 was measured equal)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if precision == "fp32":
            return ComputePath("cuda", "fp32", False, name, "CUDA: fp32 forced")
        if cuda_precision != "auto":
            return ComputePath("cuda", "fp32", False, name, "CUDA: fp32, the weights' manifest does not allow fp16")
        return ComputePath("cuda", "fp16", False, name, "CUDA: fp16 autocast (measured equal at export)")
    flags = cpu_flags() if flags is None else flags
    name = cpu_model()
    winograd = "avx2" in flags
    fp32_reason = "AVX2: Winograd for wide convolutions" if winograd else "oneDNN convolutions"
    if not cpu_has_native_bf16(flags):
        return ComputePath("cpu", "fp32", winograd, name, f"fp32, no native bf16; {fp32_reason}")
    if precision == "fp32":
        return ComputePath("cpu", "fp32", winograd, name, f"fp32 forced; {fp32_reason}")
    if manifest_precision != "auto":
        return ComputePath("cpu", "fp32", winograd, name,
                           f"fp32: the weights' manifest does not allow bf16; {fp32_reason}")
    return ComputePath("cpu", "bf16", False, name, "native bf16 (AMX/AVX512-BF16): bf16 autocast")
