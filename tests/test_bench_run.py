"""bench/run.py end to end in its tiny mode: both families' rows run, and the last line keeps its format.

The benchmark's figures are quoted in README.md and docs/speed.md; this keeps the command behind them
working as the code under it changes (the full run takes minutes and is not a CI job).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAST_LINE = re.compile(r"speedup=(?P<speedup>\S+) fraction_of_peak=(?P<fraction>\S+) "
                       r"seconds_per_case=(?P<per_case>\S+) peak_mb=(?P<peak>\d+) cpu=(?P<cpu>\S+)")


def test_a_tiny_benchmark_run_ends_with_the_summary_line(tmp_path: Path) -> None:
    report = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "bench/run.py", "--tiny", "--device", "cpu", "--threads", "1",
                           "--json", str(report)], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    last = done.stdout.strip().splitlines()[-1]
    match = LAST_LINE.fullmatch(last)
    assert match, last
    assert float(match["speedup"]) > 0 and 0 < float(match["fraction"]) < 2 and int(match["peak"]) > 0
    assert match["per_case"] == "nan"  # a 128² row is not extrapolated to a 512² case
    data = json.loads(report.read_text())
    assert data["summary"] == last
    assert [(r["family"], r["size"]) for r in data["rows"]] == [("segresnet2d", "full"), ("cascade3d", "shipped")]
    for row in data["rows"]:
        assert row["speedup"] > 0 and 0 <= row["dice_vs_baseline"] <= 1 and 0 <= row["dice_same_input"] <= 1


def _bench_run():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import run as bench_run
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return bench_run


def test_each_row_is_measured_against_the_peak_of_the_precision_it_ran_in() -> None:
    bench_run = _bench_run()
    keys = {(d, p): bench_run.peak_key({"device": d, "precision": p})
            for d, p in (("cuda", "fp16"), ("cuda", "fp32"), ("cpu", "bf16"), ("cpu", "fp32"))}
    assert keys == {("cuda", "fp16"): "cuda-fp16", ("cuda", "fp32"): "cuda-fp32", ("cpu", "bf16"): "cpu-bf16",
                    ("cpu", "fp32"): "cpu-fp32"}  # a CUDA path the manifest keeps in fp32 has its own peak
    assert {k for k, _ in bench_run.peak_kinds("cuda")} == {"cuda-fp16", "cuda-fp32"}


def test_rows_take_the_trained_weights_given_for_their_family_and_size(tmp_path: Path) -> None:
    bench_run = _bench_run()
    full, cascade = tmp_path / "seed-size", tmp_path / "cascade"
    given = {("segresnet2d", "full"): full, ("cascade3d", "shipped"): cascade}
    assert bench_run.manifest_settings("segresnet2d", "full", given) == ({}, full)
    assert bench_run.manifest_settings("cascade3d", "shipped", given) == ({}, cascade)
    settings, trained = bench_run.manifest_settings("cascade3d", "full", given)  # nothing given: random nets
    assert trained is None and settings["network"]["init_filters"] == 32
    assert bench_run.manifest_settings("segresnet2d", "full", None)[1] is None
    assert bench_run.manifest_settings("segresnet2d", "shipped", given)[1] != full


def test_weights_of_another_family_are_refused_with_one_line(capsys) -> None:
    bench_run = _bench_run()
    assert bench_run.main(["--tiny", "--cascade-weights", str(ROOT / "weights")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "segresnet2d weights folder, where cascade3d" in err
