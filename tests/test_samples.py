"""The shipped weights on the bundled sample cases reproduce samples/expected (what test.sh checks in Docker)."""

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import process
from model.weights import load_manifest

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_weights_are_small_and_verified():
    manifest = load_manifest(ROOT / "weights")
    assert len(manifest.folds) >= 2
    assert sum((ROOT / "weights" / f.file).stat().st_size for f in manifest.folds) <= 30_000_000
    assert "generated" in json.dumps(manifest.description).lower()


def masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: sitk.GetArrayFromImage(sitk.ReadImage(str(p))).astype(bool)
            for p in sorted(folder.glob("*.nii.gz"))}


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_sample_cases_reproduce_expected_masks(tmp_path, precision):
    """samples/expected was made with ``--precision fp32`` on the 2-core Xeon: the fp32 path reproduces it
    voxel for voxel there (another CPU's fp32 kernels may round a voxel at the threshold the other
    way: Dice ≥ 0.995 allowed). The dispatched path (bf16 on a CPU with native bf16) must meet the rule
    every faster path meets: Dice ≥ 0.99 and volume within 1 % (measured: 0.9995–0.9998)."""
    assert process.main(["--input", str(ROOT / "samples" / "input"), "--output", str(tmp_path),
                         "--weights", str(ROOT / "weights"), "--device", "cpu", "--precision", precision]) == 0
    expected = sorted((ROOT / "samples" / "expected").glob("*.nii.gz"))
    assert [p.name for p in expected] == sorted(p.name for p in (ROOT / "samples" / "input").glob("*.nii.gz"))
    want, got = masks(ROOT / "samples" / "expected"), masks(tmp_path)
    min_dice, volume = (0.995, 0.005) if precision == "fp32" else (0.99, 0.01)
    for name, a in want.items():
        got_image, source = sitk.ReadImage(str(tmp_path / name)), sitk.ReadImage(str(ROOT / "samples" / "input" / name))
        assert got_image.GetSize() == source.GetSize() and got_image.GetPixelID() == sitk.sitkUInt8
        assert got_image.GetSpacing() == source.GetSpacing() and got_image.GetOrigin() == source.GetOrigin()
        b = got[name]
        assert a.any() and 2 * (a & b).sum() / (a.sum() + b.sum()) >= min_dice, name
        assert np.abs(a.sum() - b.sum()) <= max(3, volume * a.sum()), name
