"""The shipped weights on the bundled sample cases reproduce samples/expected (what test.sh checks in Docker)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import process
from model.compute import cpu_model
from model.weights import load_manifest

ROOT = Path(__file__).resolve().parents[1]
COMPARE = ROOT / "scripts" / "compare_masks.py"  # test.sh's checks, run inside the image there
MADE_ON = "Intel(R) Xeon(R) Processor"  # cpu_model() of the 2-core Xeon that made samples/expected (fp32)


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
    """samples/expected was made with ``--precision fp32`` on the 2-core Xeon (``MADE_ON``): there the fp32
    path must reproduce it voxel for voxel, checked by test.sh's own comparison. Which paths may differ,
    and by how much: fp32 on another CPU (its kernels may round a voxel at the threshold the other way;
    Dice ≥ 0.995 and volume within 0.5 % allowed), and the dispatched path (bf16 on a CPU with native
    bf16), held to the rule every faster path meets: Dice ≥ 0.99 and volume within 1 % (these weights'
    retune measured bf16 against fp32 at Dice 0.9979 and volume 0.25 % on 12 tuning-set cases)."""
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
    if precision == "fp32" and cpu_model() == MADE_ON:
        compared = run_compare("compare", ROOT / "samples" / "expected", tmp_path)
        assert compared.returncode == 0 and compared.stdout.count("ok   ") == len(want), compared.stdout


def run_compare(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(COMPARE), *map(str, args)], capture_output=True, text=True, check=False)


def test_the_container_comparison_fails_on_one_voxel_and_on_geometry(tmp_path: Path) -> None:
    """test.sh's comparison on real masks: a copy of the expected ones passes; one voxel flipped, or the
    origin moved, fails with the mask named."""
    (tmp_path / "out").mkdir()
    for path in (ROOT / "samples" / "expected").glob("*.nii.gz"):
        (tmp_path / "out" / path.name).write_bytes(path.read_bytes())
    assert run_compare("compare", ROOT / "samples" / "expected", tmp_path / "out").returncode == 0
    image = sitk.ReadImage(str(tmp_path / "out" / "001.nii.gz"))
    array = sitk.GetArrayFromImage(image)
    array.flat[0] = 1 - array.flat[0]
    flipped = sitk.GetImageFromArray(array)
    flipped.CopyInformation(image)
    sitk.WriteImage(flipped, str(tmp_path / "out" / "001.nii.gz"))
    moved = sitk.ReadImage(str(tmp_path / "out" / "002.nii.gz"))
    moved.SetOrigin(tuple(v + 0.5 for v in moved.GetOrigin()))
    sitk.WriteImage(moved, str(tmp_path / "out" / "002.nii.gz"))
    result = run_compare("compare", ROOT / "samples" / "expected", tmp_path / "out")
    assert result.returncode == 1
    assert "FAIL 001.nii.gz: voxels differ (1)" in result.stdout and "FAIL 002.nii.gz: geometry" in result.stdout


def test_the_grand_challenge_layout_reproduces_the_expected_mask(tmp_path: Path) -> None:
    """test.sh's second run without Docker: a sample as grand-challenge hands it over (one .mha and
    inputs.json), segmented with fp32, equals its expected mask in the .mha's geometry (on another CPU
    than ``MADE_ON`` the geometry and pixel type still must, the voxels may differ as above)."""
    case = ROOT / "samples" / "input" / "001.nii.gz"
    assert run_compare("prepare-gc", case, tmp_path / "in").returncode == 0
    assert process.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--weights",
                         str(ROOT / "weights"), "--device", "cpu", "--precision", "fp32"]) == 0
    (mha,) = (tmp_path / "in" / "images" / "ct").glob("*.mha")
    result = run_compare("compare-gc", tmp_path / "out" / "images" / process.DEFAULT_OUTPUT_SLUG,
                         ROOT / "samples" / "expected" / "001.nii.gz", mha)
    if cpu_model() == MADE_ON:
        assert result.returncode == 0, result.stdout
    assert "geometry" not in result.stdout and "pixel type" not in result.stdout and "found" not in result.stdout
