"""Freed memory kept in the process: the next allocation of the same size faults in no new pages.

Run in a child interpreter each, since the setting lasts for the process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import resource, sys
import torch
from model.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
torch.set_num_threads(1)
conv = torch.nn.Conv2d(8, 8, 3, padding=1)
x = torch.randn(2, 8, 512, 512)  # 16 MB activation maps, above glibc's default mmap threshold
with torch.inference_mode():
    for _ in range(5):  # a network call, again and again: the last one's page faults count (the heap
        # grows by one 16 MB map once more on call 2 or 3 on the 2-core Xeon; none from call 4 on)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        y = torch.relu(conv(torch.relu(conv(x))))
        del y
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(applied, faults)
"""


def page_faults(mode: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_kept_memory_is_reused_without_page_faults() -> None:
    applied, kept = page_faults("keep")
    _, default = page_faults("default")
    assert applied
    assert default > 10_000  # three 16 MB maps of 4 kB pages, faulted in again on every call
    assert kept < 1_000
