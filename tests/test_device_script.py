"""scripts/device.sh, the one prepared GPU run, as a tiny CPU dry run: every step runs and leaves its files."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_device_script_dry_run_generates_trains_exports_and_compares(tmp_path: Path):
    env = {**os.environ, "DRY_RUN": "1", "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"),
           "SOURCES": "phantom,atlas", "FIT_ARGS": "--weight-decay 0.05 --seed 3"}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "device.sh")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "out"
    manifest = json.loads((out / "weights" / "manifest.json").read_text())
    assert len(manifest["folds"]) == 2 and manifest["inference"]["spacing_zyx"][1] == 1.8
    assert all((out / "weights" / fold["file"]).is_file() for fold in manifest["folds"])
    rows = json.loads((out / "devices.json").read_text())
    assert {row["case"] for row in rows} == {"001.nii.gz", "002.nii.gz"}
    log = (out / "device.log").read_text()
    assert "training 2 folds" in log and "done; weights and logs in" in log
    cases = json.loads((tmp_path / "work" / "data" / "cases.json").read_text())
    assert {case["source"] for case in cases} <= {"phantom", "atlas"} and "from phantom,atlas" in log
    training = json.loads((tmp_path / "work" / "run" / "config.json").read_text())["training"]
    assert (training["weight_decay"], training["seed"]) == (0.05, 3)  # FIT_ARGS reached train.py fit
