"""Per-layer timing of the CPU compute paths: direct fp32, Winograd fp32 (model/winograd.py), bf16 autocast.

    python3 bench/conv_paths.py [--repeat 5]

For the 3 × 3 convolutions of the seed-size 2D network's wide levels (the shapes a 512² slice's head
crop gives them), prints the best of ``--repeat`` calls for each path and the CPU model and flags,
so that the dispatch of :mod:`model.compute` (Winograd only on AVX2 without AVX-512, bf16 only with
native bf16) can be checked on whatever CPU this runs on.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.compute import cpu_flags, cpu_has_native_bf16, cpu_model
from model.winograd import WinogradConv2d, transformed_weights

SHAPES = ((2, 128, 108, 92), (8, 256, 54, 46), (8, 512, 27, 23))  # batch, channels, height, width


def best_seconds(run, repeat: int) -> float:
    run()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


@torch.inference_mode()
def time_layer(shape: tuple[int, int, int, int], repeat: int) -> dict[str, float]:
    batch, channels, height, width = shape
    conv = nn.Conv2d(channels, channels, 3, padding=1).eval()
    x = torch.randn(batch, channels, height, width).contiguous(memory_format=torch.channels_last)
    conv = conv.to(memory_format=torch.channels_last)
    times = {"direct fp32": best_seconds(lambda: conv(x), repeat)}
    winograd = WinogradConv2d(conv)
    with transformed_weights(winograd):
        times["winograd fp32"] = best_seconds(lambda: winograd(x), repeat)
    if cpu_has_native_bf16():
        def bf16() -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return conv(x)
        times["direct bf16"] = best_seconds(bf16, repeat)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    flags = cpu_flags()
    print(f"cpu: {cpu_model()}; avx2={'avx2' in flags} avx512f={'avx512f' in flags} "
          f"native_bf16={cpu_has_native_bf16()} threads={torch.get_num_threads()}")
    print("| layer (batch × channels × h × w) | " + " | ".join(time_layer(SHAPES[0], 1)) + " | Winograd speed-up |")
    for shape in SHAPES:
        times = time_layer(shape, args.repeat)
        cells = " | ".join(f"{t * 1000:.1f} ms" for t in times.values())
        print(f"| {' × '.join(map(str, shape))} | {cells} | {times['direct fp32'] / times['winograd fp32']:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
