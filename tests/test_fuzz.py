"""A short, bounded fuzz run over image reading and input discovery (seeds in tests/fuzz/seeds)."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_fuzz_reading_and_discovery_finds_nothing(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    result = subprocess.run(
        [sys.executable, "tests/fuzz/fuzz_inputs.py", "-runs=2000", "-max_len=4096", "-seed=1",
         "-rss_limit_mb=2048", f"-artifact_prefix={tmp_path}/", str(corpus), "tests/fuzz/seeds"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    done = re.search(r"Done (\d+) runs", result.stderr)  # libFuzzer may overshoot -runs by one (seen: 2001)
    assert done is not None and int(done.group(1)) >= 2000, result.stderr[-3000:]
    assert not list(tmp_path.glob("crash-*"))
