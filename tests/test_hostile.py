"""Hostile inputs and faults: every case is processed or refused with one line; nothing half-written."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

import process
from model.predictor import EnsemblePredictor
from model.weights import load_manifest, load_models
from tests.conftest import ct_image, head_volume, tiny_weights

GOOD = head_volume((6, 40, 36))


def save(image, path):
    sitk.WriteImage(image, str(path))


def save_nifti(array_xyz, path, pixdim=(0.45, 0.45, 5.0)):
    image = nib.Nifti1Image(array_xyz, np.diag([0.45, 0.45, 5.0, 1.0]))
    image.header["pixdim"][1:4] = pixdim
    nib.save(image, str(path))


def truncated(path, keep=0.5):
    save(ct_image(GOOD), path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def write_all(folder: Path) -> dict[str, tuple[str, str]]:
    """Every hostile input of the issue, with the expected status and a word of the expected message."""
    folder.mkdir()
    cases = {}

    def add(name, status, words, writer):
        writer(folder / name)
        cases[name] = (status, words)

    add("truncated.nii.gz", "error", "truncated", truncated)
    add("short data.nii", "error", "header promises", lambda p: truncated(p, keep=0.8))
    add("short data.mha", "error", "not a readable image", lambda p: truncated(p, keep=0.7))
    add("short data.nrrd", "error", "not a readable image", lambda p: truncated(p, keep=0.7))
    add("notanimage.nii.gz", "error", "not a readable image", lambda p: p.write_text("hello, I am a text file"))
    add("empty.mha", "error", "empty file", lambda p: p.write_bytes(b""))
    add("flat2d.nii.gz", "ok", "", lambda p: save(sitk.GetImageFromArray(GOOD[0]), p))
    add("fourd.nii.gz", "error", "4D", lambda p: nib.save(nib.Nifti1Image(np.zeros((8, 8, 3, 2), np.int16),
                                                                            np.eye(4)), str(p)))
    add("vector.mha", "error", "components", lambda p: save(
        sitk.GetImageFromArray(np.zeros((3, 8, 8, 3), np.int16), isVector=True), p))
    add("nan.nii.gz", "error", "NaN", lambda p: save(ct_image(np.where(GOOD > 1000, np.nan, GOOD)
                                                              .astype(np.float32)), p))
    add("inf.mha", "error", "infinite", lambda p: save(ct_image(np.where(GOOD > 1000, np.inf, GOOD)
                                                                .astype(np.float32)), p))
    add("constant brain.nii.gz", "error", "no air", lambda p: save(ct_image(np.full((4, 16, 16), 40, np.int16)), p))
    add("constant air.nii.gz", "ok", "", lambda p: save(ct_image(np.full((4, 16, 16), -1000, np.int16)), p))
    add("mr_like.nii.gz", "error", "no air", lambda p: save(ct_image((GOOD + 1024) * 2), p))
    add("uint8.nii.gz", "error", "no air", lambda p: save(ct_image(np.clip(GOOD, 0, 255).astype(np.uint8)), p))
    add("int32.nii.gz", "ok", "", lambda p: save(ct_image(GOOD.astype(np.int32)), p))
    add("float64.mha", "ok", "", lambda p: save(ct_image(GOOD.astype(np.float64)), p))
    add("one slice.nii.gz", "ok", "", lambda p: save(ct_image(GOOD[2:3]), p))
    add("300 slices.nii.gz", "ok", "", lambda p: save(ct_image(np.tile(head_volume((1, 16, 16)), (300, 1, 1))), p))
    add("wide1024.nii.gz", "ok", "", lambda p: save(ct_image(head_volume((1, 1024, 1024))), p))
    oblique = tuple(sitk.VersorTransform((0.3, 0.1, 0.9), 0.4).GetMatrix())
    add("oblique.nii.gz", "ok", "", lambda p: save(ct_image(GOOD, direction=oblique), p))
    add("nonorthogonal.mha", "ok", "", lambda p: save(ct_image(GOOD, direction=(1, 0.3, 0, 0, 1, 0, 0, 0, 1)), p))
    add("zero spacing.nii.gz", "error", "pixdim", lambda p: save_nifti(GOOD.T.copy(), p, (0.45, 0.0, 5.0)))
    add("negative spacing.nii.gz", "error", "spacing", lambda p: save_nifti(GOOD.T.copy(), p, (0.45, -0.45, 5.0)))
    add("zero spacing.mha", "error", "spacing must be positive", lambda p: p.write_bytes(
        _mha_bytes(folder).replace(b"ElementSpacing = 0.45000000000000001", b"ElementSpacing = 0")))
    add("huge header.nii", "error", "voxels", lambda p: nib.save(
        nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.eye(4)), str(p)) or _resize_header(p))
    add("näme with spaces ü.nii.gz", "ok", "", lambda p: save(ct_image(GOOD), p))
    add("twin.nii.gz", "ok", "", lambda p: save(ct_image(GOOD), p))
    add("twin.mha", "ok", "", lambda p: save(ct_image(GOOD), p))
    return cases


def _mha_bytes(folder):
    path = folder / ".tmp.mha"
    sitk.WriteImage(ct_image(GOOD), str(path), useCompression=False)
    data = path.read_bytes()
    path.unlink()
    return data


def _resize_header(path):
    """A header promising 5000³ voxels over a file of a few bytes."""
    image = nib.load(str(path))
    header = image.header.copy()
    header.set_data_shape((5000, 5000, 5000))
    raw = bytearray(path.read_bytes())
    raw[: header.sizeof_hdr] = header.binaryblock
    path.write_bytes(bytes(raw))


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    expected = write_all(root / "in")
    tiny_weights(root / "weights")
    code = process.main(["--input", str(root / "in"), "--output", str(root / "out"),
                         "--weights", str(root / "weights")])
    return root, expected, code


def test_every_hostile_input_is_processed_or_refused_in_one_line(hostile_run):
    root, expected, code = hostile_run
    records = {Path(r["input"]).name: r for r in json.loads((root / "out" / "results.json").read_text())["cases"]}
    assert set(records) == set(expected)
    for name, (status, words) in expected.items():
        record = records[name]
        assert record["status"] == status, (name, record)
        if status == "error":
            assert words in record["message"] and name in record["message"] and "\n" not in record["message"]
            assert record["output"] is None and not (root / "out" / name).exists()
        else:
            mask = sitk.ReadImage(record["output"])
            source = sitk.ReadImage(str(root / "in" / name))
            assert mask.GetSize() == source.GetSize() and mask.GetPixelID() == sitk.sitkUInt8
            np.testing.assert_allclose(mask.GetDirection(), source.GetDirection(), atol=1e-6)
    assert code == 1


def test_hostile_run_leaves_no_partial_files(hostile_run):
    root, _, _ = hostile_run
    assert not [p for p in (root / "out").iterdir() if p.name.startswith(".")]


def test_names_differing_only_by_extension_are_refused_in_the_grand_challenge_layout(tmp_path):
    inp = tmp_path / "in" / "images" / "ct"
    inp.mkdir(parents=True)
    save(ct_image(GOOD), inp / "a.mha")
    (inp / "a.tif").write_bytes((inp / "a.mha").read_bytes())  # the same CT under a second extension
    tiny_weights(tmp_path / "w")
    assert process.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                         "--weights", str(tmp_path / "w")]) == 1
    records = json.loads((tmp_path / "out" / "results.json").read_text())["cases"]
    assert [r["status"] for r in records] == ["ok", "error"]
    assert "would overwrite" in records[1]["message"]


def test_unwritable_output_folder_stops_before_any_case(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    (tmp_path / "in").mkdir()
    save(ct_image(GOOD), tmp_path / "in" / "a.nii.gz")
    tiny_weights(tmp_path / "w")
    assert process.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "file" / "out"),
                         "--weights", str(tmp_path / "w")]) == 2
    assert "not writable" in capsys.readouterr().err.strip().splitlines()[-1]


def test_disk_full_while_writing_leaves_no_partial_mask(tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    for name in ("a.nii.gz", "b.nii.gz"):
        save(ct_image(GOOD), tmp_path / "in" / name)
    tiny_weights(tmp_path / "w")
    real_write = sitk.WriteImage

    def full_disk(image, path, *args, **kwargs):
        if "a.nii.gz" in path:
            Path(path).write_bytes(b"\x1f\x8b half a mask")
            raise RuntimeError("ITK ERROR: No space left on device")
        return real_write(image, path, *args, **kwargs)

    monkeypatch.setattr("model.io.sitk.WriteImage", full_disk)
    assert process.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                         "--weights", str(tmp_path / "w")]) == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b.nii.gz", "results.json"]
    records = json.loads((tmp_path / "out" / "results.json").read_text())["cases"]
    assert "No space left" in records[0]["message"]


class OomPredictor(EnsemblePredictor):
    """The real predictor, posing as on CUDA: out of memory until it runs on the CPU or with a batch of at
    most ``fits`` (then, still "on CUDA", a probability of ones without running the networks)."""

    def __init__(self, weights: Path, fits: int) -> None:
        manifest = load_manifest(weights)
        super().__init__(load_models(weights, manifest, torch.device("cpu")), manifest, torch.device("cpu"))
        self.device, self.batch_size, self.fits = torch.device("cuda"), 8, fits

    def _predict(self, hu):
        if self.device.type == "cpu":
            return super()._predict(hu)
        if self.batch_size > self.fits:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return np.ones_like(hu, dtype=np.float32), [], 0


def test_cuda_out_of_memory_halves_the_batch_then_falls_back_to_cpu(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    tiny_weights(tmp_path)
    said = []
    halved = OomPredictor(tmp_path, fits=2)
    assert halved.predict_with_fallback(np.zeros((2, 2, 2), np.float32), None, said.append).prob.sum() == 8
    assert halved.batch_size == 2 and halved.device.type == "cuda"
    cpu = OomPredictor(tmp_path, fits=0)
    hu = GOOD.astype(np.float32)
    assert cpu.predict_with_fallback(hu, None, said.append).prob.shape == hu.shape  # the networks ran, on the CPU
    assert cpu.device.type == "cpu" and cpu.batch_size == 1
    assert all(p.device.type == "cpu" for model in cpu.models for p in model.parameters())
    assert said == ["CUDA out of memory: retrying with batch size 4", "CUDA out of memory: retrying with batch size 2",
                    "CUDA out of memory: retrying with batch size 4", "CUDA out of memory: retrying with batch size 2",
                    "CUDA out of memory: retrying with batch size 1",
                    "CUDA out of memory at batch size 1: continuing on the CPU"]


def test_sigterm_keeps_finished_masks_and_leaves_nothing_half_written(tmp_path):
    (tmp_path / "in").mkdir()
    volume = head_volume((8, 96, 96))
    for index in range(40):
        save(ct_image(volume), tmp_path / "in" / f"{index:03d}.nii.gz")
    tiny_weights(tmp_path / "w")
    out = tmp_path / "out"
    child = subprocess.Popen([sys.executable, "process.py", "--input", str(tmp_path / "in"), "--output", str(out),
                              "--weights", str(tmp_path / "w")], cwd=Path(__file__).parents[1],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "001.nii.gz").exists() and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("error: interrupted")
    masks = sorted(p for p in out.iterdir() if p.name.endswith(".nii.gz"))
    assert 2 <= len(masks) < 40
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    for mask in masks:
        assert sitk.ReadImage(str(mask)).GetSize() == (96, 96, 8)
    done = json.loads((out / "results.json").read_text())["cases"]
    assert {r["case"] for r in done if r["status"] == "ok"} <= {m.name[:3] for m in masks}
