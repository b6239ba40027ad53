"""What the benchmark measures besides wall time: FLOPs of the network calls, the machine's matmul
peak, and peak memory.

FLOPs are counted by PyTorch's own ``FlopCounterMode`` (convolutions and matmuls, the work that
dominates) on a copy of each network on the ``meta`` device, once per distinct input shape that the
real run fed it, so counting costs no arithmetic and the count is of exactly what ran: a Winograd
layer (``model/winograd.py``) counts its transforms and matrix products, not a direct convolution's.
"""

from __future__ import annotations

import copy
import resource
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from model.winograd import transformed_weights


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, seconds: float = 3.0, dtype: torch.dtype | None = None) -> tuple[float, str]:
    """Best sustained FLOP/s of a square matmul in ``dtype`` (default: fp16 on CUDA, fp32 on the CPU)."""
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        a @ b
        sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best, f"{n}x{n} {str(dtype).removeprefix('torch.')} matmul"


class ShapeRecorder:
    """Records the input shape of every call to the given modules (forward pre-hooks)."""

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.modules = modules
        self.calls: Counter[tuple[str, tuple[int, ...]]] = Counter()
        self._handles = [module.register_forward_pre_hook(self._hook(name)) for name, module in modules.items()]

    def _hook(self, name: str) -> Callable[[nn.Module, tuple], None]:
        def record(_module: nn.Module, args: tuple) -> None:
            self.calls[(name, tuple(args[0].shape))] += 1
        return record

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()

    def flops(self) -> int:
        """Total FLOPs of the recorded calls."""
        total, cache = 0, {}
        for (name, shape), count in self.calls.items():
            if (name, shape) not in cache:
                cache[(name, shape)] = network_flops(self.modules[name], shape)
            total += cache[(name, shape)] * count
        return total


def network_flops(module: nn.Module, shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass for an input of ``shape`` (counted on the meta device)."""
    meta = copy.deepcopy(module).to("meta")
    with torch.inference_mode(), transformed_weights(meta), FlopCounterMode(display=False) as counter:
        meta(torch.empty(shape, device="meta"))  # Winograd weights: transformed once per fold and case
    return int(counter.get_total_flops())


def _vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise OSError("no VmHWM")


@contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, float]]:
    """Peak resident memory of this process (MB) inside the block, and peak CUDA allocation.

    On Linux the resident high-water mark is reset on entry (``/proc/self/clear_refs``), so the
    number is this block's peak; elsewhere it is the process's peak so far (``ru_maxrss``).
    """
    result: dict[str, float] = {}
    try:
        Path("/proc/self/clear_refs").write_text("5")
        read_peak = _vm_hwm_mb
    except OSError:
        def read_peak() -> float:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        yield result
    finally:
        result["peak_rss_mb"] = read_peak()
        if device.type == "cuda":
            result["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
