"""Training: splits, datasets, a short run that learns, resume, export into process.py, the 3D cascade."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

import process
import train
from model.compute import cpu_has_native_bf16
from model.io import CaseError
from model.networks import SegResNet2DNetwork
from model.postprocess import PostprocessConfig, most_probable_region, postprocess
from model.spacing import voxel_ml
from model.weights import Manifest, load_manifest, load_models
from model.windowing import window_slices
from tests.ones_dataset import OnesDataset
from tests.skull_base import skull_base_head
from training import data as training_data
from training import export as export_module
from training.data import (
    Augment,
    CachedCase,
    PatchDataset,
    SliceDataset,
    cache_case,
    crop_centres,
    lesion_slices,
    slice_input,
)
from training.distributed import DistInfo
from training.export import CROP_MARGIN_CANDIDATES, WHOLE_SLICE
from training.families import training_family
from training.loop import LoopConfig, widen_input
from training.loop import fit as loop_fit
from training.losses import BlobDice, dice_bce, segmentation_loss
from training.splits import find_cases, make_splits, read_splits, write_splits
from training.validation import dice

TINY_2D = ["--init-filters", "4", "--blocks-down", "1", "1", "1", "--dsdepth", "2", "--crop", "32", "32",
           "--workers", "0", "--device", "cpu", "--threads", "1"]


def blob_case(seed: int, shape: tuple[int, int, int] = (8, 64, 64)) -> tuple[np.ndarray, np.ndarray]:
    """int16 HU head (skull ring around 35 HU brain, noise) with one or two 75 HU blobs, and their label."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    r = ((y - shape[1] / 2) / (shape[1] * 0.42)) ** 2 + ((x - shape[2] / 2) / (shape[2] * 0.42)) ** 2
    hu = np.full(shape, -1000.0)
    hu[np.broadcast_to(r < 1.0, shape)] = 1000.0
    hu[np.broadcast_to(r < 0.8, shape)] = 35.0
    label = np.zeros(shape, dtype=np.uint8)
    for _ in range(int(rng.integers(1, 3))):
        cz, cy, cx = rng.integers(2, shape[0] - 2), rng.integers(22, shape[1] - 22), rng.integers(22, shape[2] - 22)
        radius = rng.uniform(4, 8)
        blob = ((z - cz) * 3) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 < radius**2
        label[blob] = 1
    hu[label > 0] = 75.0
    hu += rng.normal(0, 6, shape)
    return hu.astype(np.int16), label


def write_dataset(root: Path, count: int, subset: str = "train", first_seed: int = 0) -> Path:
    for index in range(count):
        hu, label = blob_case(first_seed + index)
        for kind, array in (("data", hu), ("label", label)):
            image = sitk.GetImageFromArray(array)
            image.SetSpacing((0.9, 0.9, 5.0))
            (root / subset / kind).mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(image, str(root / subset / kind / f"{index + 1:03d}.nii.gz"))
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("instance"), 4)


def fit(dataset: Path, out: Path, *extra: str) -> int:
    return train.main(["fit", "--data", str(dataset), "--out", str(out), *TINY_2D, *extra])


def log_rows(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_splits_are_deterministic_partitions_and_read_back(tmp_path: Path) -> None:
    names = [f"{i:03d}" for i in range(23)]
    splits = make_splits(names, 5, seed=3)
    assert splits == make_splits(names, 5, seed=3) and splits != make_splits(names, 5, seed=4)
    vals = [n for fold in splits for n in fold["val"]]
    assert sorted(vals) == names  # every case held out exactly once
    assert all(set(f["train"]) == set(names) - set(f["val"]) for f in splits)
    write_splits(splits, tmp_path / "splits.json")
    assert read_splits(tmp_path / "splits.json", names) == splits
    write_splits([{"train": ["001", "999"], "val": ["002"]}], tmp_path / "bad.json")
    with pytest.raises(CaseError, match="999"):
        read_splits(tmp_path / "bad.json", names)
    write_splits([{"train": ["001", "002"], "val": ["002"]}], tmp_path / "overlap.json")
    with pytest.raises(CaseError, match="both train and val"):
        read_splits(tmp_path / "overlap.json", names)


def test_cache_holds_canonical_arrays_and_samples_are_reproducible(dataset: Path, tmp_path: Path) -> None:
    case = find_cases(dataset)[0]
    cached = cache_case(case, tmp_path)
    hu = sitk.GetArrayFromImage(sitk.ReadImage(str(case.image)))  # identity direction: already canonical
    np.testing.assert_array_equal(cached.hu(), hu)
    assert cached.foreground_slices == tuple(np.flatnonzero(cached.label().any(axis=(1, 2))))
    # training windows a slice exactly as inference windows the whole volume
    full = window_slices(torch.from_numpy(hu.astype(np.float32)), "combined9")
    for z in (0, 3, len(hu) - 1):
        torch.testing.assert_close(slice_input(cached.hu(), z, "combined9"), full[z])
    ds = SliceDataset([cached], "windows3", (32, 32), length=8, seed=5)
    first = ds[3]
    assert first["image"].shape == (3, 32, 32) and first["label"].shape == (1, 32, 32)
    torch.testing.assert_close(ds[3], first)  # same (seed, epoch, index) → same sample
    ds.set_epoch(1)
    assert not torch.equal(ds[3]["image"], first["image"])


def test_two_epochs_lower_the_loss_and_write_checkpoints(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert fit(dataset, out, "--fold", "0", "--folds", "2", "--epochs", "2", "--steps-per-epoch", "8",
               "--batch-size", "4", "--lr", "0.01") == 0
    rows = log_rows(out / "fold0/training_log.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    assert all(0.0 <= float(r["val_dice"]) <= 1.0 for r in rows)
    for name in ("best.pt", "last.pt", "curves.png"):
        assert (out / "fold0" / name).is_file()
    assert json.loads((out / "config.json").read_text())["family"] == "segresnet2d"
    assert len(json.loads((out / "splits.json").read_text())) == 2


@pytest.mark.parametrize("average", [[], ["--average-from", "1"]], ids=["cosine", "averaged"])
def test_resumed_run_continues_where_it_stopped(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               average: list[str]) -> None:
    args = ["--fold", "1", "--folds", "2", "--epochs", "2", "--steps-per-epoch", "3", "--batch-size", "2", *average]
    assert fit(dataset, tmp_path / "whole", *args) == 0

    original = SliceDataset.set_epoch

    def stop_at_epoch_2(self: SliceDataset, epoch: int) -> None:
        if epoch == 2:
            raise KeyboardInterrupt
        original(self, epoch)

    monkeypatch.setattr(SliceDataset, "set_epoch", stop_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        fit(dataset, tmp_path / "split", *args)
    assert torch.load(tmp_path / "split/fold1/last.pt", weights_only=True)["epoch"] == 1
    monkeypatch.setattr(SliceDataset, "set_epoch", original)
    assert fit(dataset, tmp_path / "split", *args, "--resume") == 0

    whole = torch.load(tmp_path / "whole/fold1/last.pt", weights_only=True)
    resumed = torch.load(tmp_path / "split/fold1/last.pt", weights_only=True)
    assert resumed["epoch"] == 2
    for part in ("model", "trained") if average else ("model",):  # the average and the weights it follows
        for key, value in whole[part].items():
            torch.testing.assert_close(resumed[part][key], value, rtol=1e-5, atol=1e-6)
    if average:
        conv = next(k for k, v in whole["model"].items() if v.ndim == 4)
        assert not torch.equal(whole["model"][conv], whole["trained"][conv])
        assert int(resumed["average"]["n_averaged"]) == int(whole["average"]["n_averaged"]) > 3
        assert json.loads((tmp_path / "split/config.json").read_text())["training"]["average_from"] == 1
    assert [r["epoch"] for r in log_rows(tmp_path / "split/fold1/training_log.csv")] == ["1", "2"]


def test_warm_restart_begins_from_the_earlier_runs_fold(dataset: Path, tmp_path: Path) -> None:
    args = ["--fold", "1", "--folds", "2", "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2"]
    assert fit(dataset, tmp_path / "first", *args) == 0
    splits = str(tmp_path / "first/splits.json")
    assert fit(dataset, tmp_path / "second", *args, "--lr", "1e-12", "--splits", splits,
               "--init-from", str(tmp_path / "first")) == 0
    assert fit(dataset, tmp_path / "fresh", *args, "--lr", "1e-12", "--splits", splits) == 0
    first = torch.load(tmp_path / "first/fold1/best.pt", weights_only=True)["model"]
    second = torch.load(tmp_path / "second/fold1/last.pt", weights_only=True)["model"]
    fresh = torch.load(tmp_path / "fresh/fold1/last.pt", weights_only=True)["model"]
    convs = [k for k, v in first.items() if k.endswith("conv.weight") or (v.ndim == 4 and v.is_floating_point())]
    assert convs
    for key in convs:  # a step at lr 1e-12 leaves the warm start's weights where they were
        torch.testing.assert_close(second[key], first[key], rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(fresh[k], first[k], atol=1e-4) for k in convs)  # not the seed's init
    assert train.main(["fit", "--data", str(dataset), "--out", str(tmp_path / "none"), *TINY_2D, *args,
                       "--init-from", str(tmp_path / "missing")]) == 2  # one-line error, no traceback


def test_one_slice_run_warm_starts_a_neighbour_slice_run(dataset: Path, tmp_path: Path) -> None:
    """windows3 → combined9: the first convolution's earlier weights go to the centre slice's channels and
    the neighbours' start at zero, so before any step the new network computes exactly the earlier one."""
    args = ["--fold", "0", "--folds", "2", "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2"]
    assert fit(dataset, tmp_path / "one", *args) == 0
    assert fit(dataset, tmp_path / "nine", *args, "--lr", "1e-12", "--input-mode", "combined9",
               "--splits", str(tmp_path / "one/splits.json"), "--init-from", str(tmp_path / "one")) == 0
    one = torch.load(tmp_path / "one/fold0/best.pt", weights_only=True)["model"]
    nine = torch.load(tmp_path / "nine/fold0/last.pt", weights_only=True)["model"]
    first = "encoder.conv_init.weight"
    assert one[first].shape[1] == 3 and nine[first].shape[1] == 9
    torch.testing.assert_close(nine[first][:, 3:6], one[first], rtol=1e-5, atol=1e-6)
    assert nine[first][:, :3].abs().max() < 1e-6 and nine[first][:, 6:].abs().max() < 1e-6

    net = SegResNet2DNetwork(init_filters=4, blocks_down=(1, 1, 1), dsdepth=2)
    before, after = net.build(3).eval(), net.build(9).eval()
    before.load_state_dict(one)
    after.load_state_dict(widen_input(one, after.state_dict()))
    hu = torch.from_numpy(blob_case(3)[0].astype(np.float32))
    with torch.no_grad():
        torch.testing.assert_close(after(window_slices(hu, "combined9")), before(window_slices(hu, "windows3")),
                                   rtol=1e-4, atol=1e-4)


def test_neighbour_modes_sometimes_see_a_lone_slice(dataset: Path, tmp_path: Path) -> None:
    """A share of combined9 samples come without their neighbours (each slice block the centre's), as a
    one-slice input gives them; windows3 samples are the same stream whatever the share."""
    cached = cache_case(find_cases(dataset)[0], tmp_path)

    def samples(mode: str, share: float) -> list[torch.Tensor]:
        ds = SliceDataset([cached], mode, (32, 32), length=60, seed=2, augment=Augment(lone_slice=share, noise_std=0.0))
        return [ds[i]["image"] for i in range(len(ds))]

    def lone(image: torch.Tensor) -> bool:
        return torch.equal(image[:3], image[3:6]) and torch.equal(image[6:], image[3:6])

    assert all(lone(image) for image in samples("combined9", 1.0))
    shares = np.mean([lone(image) for image in samples("combined9", 0.3)])
    assert 0.1 < shares < 0.5
    assert not any(lone(image) for image in samples("combined9", 0.0))
    for a, b in zip(samples("windows3", 0.0), samples("windows3", 1.0), strict=True):
        torch.testing.assert_close(a, b)


def check_agreement(manifest: Manifest, precision: str = "bf16") -> None:
    """The manifest allows ``precision`` (bf16 on the CPU, fp16 on CUDA) exactly when a measured margin
    met the mask rule, the smallest such; the recheck margin serves both: the larger of the allowed."""
    agreement = manifest.description[f"{precision}_agreement"]
    allowed = {"bf16": manifest.inference.cpu_precision, "fp16": manifest.inference.cuda_precision}[precision]
    assert allowed == ("auto" if agreement["allowed"] else "fp32")
    meeting = [float(m) for m, a in agreement["margins"].items() if a["dice"] >= 0.99 and a["volume_change"] <= 0.01]
    assert agreement["allowed"] == bool(meeting)
    assert agreement["recheck_margin"] == (min(meeting) if meeting else None)  # tried in turn: the smallest
    assert not meeting or max(float(m) for m in agreement["margins"]) == min(meeting)  # ... then no more
    margins = [manifest.description[f"{p}_agreement"]["recheck_margin"] or 0.0 for p in ("bf16", "fp16")
               if manifest.description.get(f"{p}_agreement", {}).get("allowed")]
    assert manifest.inference.recheck_margin == max(margins, default=0.0)
    assert agreement["margins"]["0.0"]["rechecked"] == 0.0


def test_export_round_trips_into_process(dataset: Path, tmp_path: Path) -> None:
    run, weights = tmp_path / "run", tmp_path / "weights"
    assert fit(dataset, run, "--folds", "2", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2") == 0
    assert train.main(["export", "--run", str(run), "--weights", str(weights),
                       "--description", "data=blobs"]) == 0
    manifest = load_manifest(weights)  # hashes verified
    assert len(manifest.folds) == 2 and manifest.postprocess.never_empty
    assert manifest.inference.slab_mm == 5.0  # fit's default: thinner slices are averaged to it
    low, high = manifest.inference.brain_hu  # measured on the training heads: 35 HU brain and noise
    assert 33.0 < low <= high < 37.0
    assert manifest.description["data"] == "blobs"
    tuning = json.loads((run / "export_tuning.json").read_text())
    assert tuning["min_component_ml"] == manifest.postprocess.min_component_ml
    margin, agreement = manifest.inference.crop_margin, tuning["crop_margin_agreement"]
    assert agreement == manifest.description["crop_margin_agreement"]
    assert all(agreement[str(m)] < 0.999 for m in CROP_MARGIN_CANDIDATES if m < margin)  # the smallest that agrees
    assert margin == WHOLE_SLICE or agreement[str(margin)] >= 0.999
    models = load_models(weights, manifest, torch.device("cpu"))
    best = torch.load(run / "fold1/best.pt", weights_only=True)["model"]
    assert manifest.network.norm == "batch"
    assert float(best["encoder.layers.0.blocks.0.norm1.running_var"].sub(1).abs().max()) > 1e-3  # stats learned
    for key, value in best.items():
        torch.testing.assert_close(models[1].state_dict()[key], value)
    output = tmp_path / "predict"
    assert process.main(["--input", str(dataset / "train/data"), "--output", str(output),
                         "--weights", str(weights), "--device", "cpu"]) == 0
    mask = sitk.ReadImage(str(output / "001.nii.gz"))
    assert mask.GetSize() == (64, 64, 8)
    if cpu_has_native_bf16():  # bf16 allowed on the CPU only where measured equal to fp32, out of fold
        check_agreement(manifest)
    else:
        assert manifest.inference.cpu_precision == "fp32" and "bf16_agreement" not in manifest.description
    assert manifest.inference.cuda_precision == "fp32" and "fp16_agreement" not in manifest.description  # unmeasured
    assert train.main(["export", "--run", str(run), "--weights", str(tmp_path / "one"), "--folds", "1",
                       "--min-component-ml", "0", "--crop-margin", "16", "--measure-bf16", "--measure-fp16"]) == 0
    assert train.main(["export", "--run", str(run), "--weights", str(tmp_path / "none"), "--folds", "1",
                       "--min-component-ml", "0", "--crop-margin", "16", "--threshold", "0.5",
                       "--intracranial-share", "0", "--keep-peak", "0.9", "--min-peak", "0.7", "--slab-mm", "0",
                       "--no-brain-hu"]) == 0
    assert load_manifest(tmp_path / "none").inference.slab_mm is None  # export --slab-mm 0: slices as they are
    assert load_manifest(tmp_path / "none").inference.brain_hu is None  # never shifted
    one = load_manifest(tmp_path / "one")  # a subset of the folds ships, e.g. those trained in the time there was
    assert len(one.folds) == 1 and one.description["cv_folds"] == "[1] of 2"
    assert one.inference.slab_mm == 5.0
    check_agreement(one)  # measured on any CPU when asked (emulated where bf16 is not native)
    check_agreement(one, "fp16")  # CUDA's fp16, emulated on the CPU
    torch.testing.assert_close(load_models(tmp_path / "one", one, torch.device("cpu"))[0].state_dict()[key], value)


def test_the_manifest_records_each_folds_own_schedule(dataset: Path, tmp_path: Path) -> None:
    """Folds trained by separate ``fit --fold K`` calls keep their own epochs and HU offset: config.json holds
    only the last."""
    run, common = tmp_path / "run", ["--folds", "2", "--steps-per-epoch", "1", "--batch-size", "2"]
    assert fit(dataset, run, *common, "--fold", "0", "--epochs", "2", "--offset-hu", "10", "--scanner-augment") == 0
    assert fit(dataset, run, *common, "--fold", "1", "--epochs", "1") == 0
    assert json.loads((run / "config.json").read_text())["training"]["epochs"] == 1
    settings = ["--threshold", "0.5", "--min-component-ml", "0", "--intracranial-share", "0", "--keep-peak", "1",
                "--min-peak", "0", "--crop-margin", "16"]  # given: no out-of-fold tuning
    assert train.main(["export", "--run", str(run), "--weights", str(tmp_path / "weights"), *settings]) == 0
    training = load_manifest(tmp_path / "weights").description["training"]
    assert (training["fold0"]["epochs"], training["fold1"]["epochs"]) == (2, 1)
    assert (training["fold0"]["offset_hu"], training["fold1"]["offset_hu"]) == (10.0, 0.0)
    assert (training["fold0"]["scanner_augment"], training["fold1"]["scanner_augment"]) == (True, False)
    (run / "fold0" / "training.json").unlink()  # a run from before the per-fold records: config.json's
    assert train.main(["export", "--run", str(run), "--weights", str(tmp_path / "older"), *settings]) == 0
    assert load_manifest(tmp_path / "older").description["training"]["fold0"]["epochs"] == 1


def test_export_picks_the_smallest_margin_that_matches_whole_slices(dataset: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Margins below 32 flip some voxels against the whole slice, 32 flips none: 32 is chosen, and the
    post-processing is tuned on margin 32's predictions."""
    run = tmp_path / "run"
    assert fit(dataset, run, "--folds", "2", "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2") == 0
    seen: list[int] = []

    def fake_predict(model, manifest, case, device) -> np.ndarray:
        margin = manifest.inference.crop_margin
        seen.append(margin)
        prob = np.asarray(case.label(), dtype=np.float32) * 0.9  # the whole slice's answer: the label
        if margin < 32:
            prob[0, :4, :4] = 0.9  # a speck the crop's border added
        return prob

    monkeypatch.setattr(export_module, "predict_case", fake_predict)
    manifest = export_module.export_run(run, tmp_path / "weights")
    assert manifest.inference.crop_margin == 32
    agreement = manifest.description["crop_margin_agreement"]
    assert agreement["0"] == agreement["8"] == agreement["16"] < 0.999 and agreement["32"] == agreement["64"] == 1.0
    assert sorted(set(seen)) == [*CROP_MARGIN_CANDIDATES, WHOLE_SLICE] and len(seen) == 6 * 4  # 4 held-out cases
    assert manifest.description["min_component_ml_oof_dice"]["0.0"] == 1.0  # scored at margin 32: the label
    assert manifest.description["single_slice_oof_dice"]["0.0"] == 1.0  # each slice alone: the label too
    assert manifest.postprocess.single_slice_min_component_ml == 0.0  # ties: the smallest
    scores = manifest.description["intracranial_share_oof_dice"]
    assert scores["0.0"] == scores["0.5"] and manifest.postprocess.intracranial_share == 0.5  # a tie: filter on
    assert manifest.postprocess.max_floor_share == 0.5  # written as set, not tuned
    off = export_module.export_run(run, tmp_path / "off", max_floor_share=1.0, crop_margin=32, threshold=0.5,
                                   min_component_ml=0.0, intracranial_share=0.5, keep_peak=1.0, min_peak=0.0)
    assert off.postprocess.max_floor_share == 1.0


def test_export_can_tune_on_a_set_the_ensemble_predicts(dataset: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``--tune-on`` every case of that folder is predicted by all exported folds together, as the
    container predicts, so a finding the folds disagree on (mean 0.6) is there for the peak rule to see."""
    run = tmp_path / "run"
    assert fit(dataset, run, "--folds", "2", "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2") == 0
    tune = write_dataset(tmp_path / "tune", 3, first_seed=10)
    seen: list[tuple[str, int]] = []

    def fake_predict(model, manifest, case, device) -> np.ndarray:
        seen.append((case.name, len(model)))
        label = np.asarray(case.label()) > 0
        prob = label.astype(np.float32)  # every fold finds the blood
        speck = np.zeros_like(label)
        speck[:, :6, :6] = True  # and one of two folds a large false finding, away from it
        prob[speck & ~ndimage.binary_dilation(label, iterations=2)] = 0.6
        return prob

    monkeypatch.setattr(export_module, "predict_case", fake_predict)
    assert train.main(["export", "--run", str(run), "--weights", str(tmp_path / "w"), "--crop-margin", "16",
                       "--threshold", "0.5", "--intracranial-share", "0", "--tune-on", str(tune)]) == 0
    manifest = load_manifest(tmp_path / "w")
    assert sorted(seen) == [("001", 2), ("002", 2), ("003", 2)]  # the set's cases, each by both folds
    assert str(tune) in manifest.description["tuned_on"]
    assert manifest.postprocess.min_peak >= 0.7  # the disagreed finding removed by the peak rule
    assert manifest.description["oof_score"] == 1.0
    assert train.main(["export", "--run", str(run), "--weights", str(tmp_path / "oof"), "--crop-margin", "16",
                       "--threshold", "0.5"]) == 0  # out of fold: each held-out case by its own fold's model
    assert {n for _, n in seen[3:]} == {1} and load_manifest(tmp_path / "oof").description["tuned_on"] == "out of fold"


def test_retune_rechooses_a_weights_folders_postprocessing_without_its_run(dataset: Path, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """``retune`` needs only the weights folder and a labelled set: the folds' files are copied byte for
    byte, the post-processing is chosen on the set as the ensemble predicts it, everything else kept."""
    run = tmp_path / "run"
    assert fit(dataset, run, "--folds", "2", "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2") == 0
    assert train.main(["export", "--run", str(run), "--weights", str(tmp_path / "w"), "--crop-margin", "16",
                       "--threshold", "0.5", "--min-component-ml", "0.5", "--intracranial-share", "0",
                       "--keep-peak", "1", "--min-peak", "0"]) == 0
    shutil.rmtree(run)  # the run is gone: only the weights folder is left
    tune = write_dataset(tmp_path / "tune", 3, first_seed=10)
    seen: list[tuple[str, int]] = []

    def fake_predict(models, manifest, case, device) -> np.ndarray:
        seen.append((case.name, len(models)))
        assert manifest.inference.crop_margin == 16  # the folder's own margin
        assert manifest.inference.cpu_precision == manifest.inference.cuda_precision == "fp32"  # tuned as export tunes
        label = np.asarray(case.label()) > 0
        prob = label.astype(np.float32) * 0.45  # the ensemble is sure of the blood only at 0.45
        speck = np.zeros_like(label)
        speck[:, :6, :6] = True  # and half of it of a false finding away from the blood
        prob[speck & ~ndimage.binary_dilation(label, iterations=2)] = 0.35
        return prob

    monkeypatch.setattr(export_module, "predict_case", fake_predict)
    assert train.main(["retune", "--weights", str(tmp_path / "w"), "--tune-on", str(tune),
                       "--out", str(tmp_path / "new")]) == 0
    before, after = load_manifest(tmp_path / "w"), load_manifest(tmp_path / "new")
    assert sorted(seen) == [("001", 2), ("002", 2), ("003", 2)]  # the set's cases, each by both folds
    for old, new in zip(before.folds, after.folds, strict=True):
        assert (tmp_path / "w" / old.file).read_bytes() == (tmp_path / "new" / new.file).read_bytes()
    assert before.threshold == 0.5 and after.threshold < 0.45  # at 0.5 and over only the fallback is left
    assert after.description["oof_score"] == 1.0 and str(tune) in after.description["tuned_on"]
    assert after.network == before.network and after.inference.crop_margin == 16
    assert after.description["trained_on"] == before.description["trained_on"] and "retuned" in after.description
    assert train.main(["retune", "--weights", str(tmp_path / "missing"), "--tune-on", str(tune),
                       "--out", str(tmp_path / "x")]) == 2  # one clear line, no traceback


@pytest.mark.parametrize("seed", range(4))
def test_tuning_scores_equal_postprocessing_each_candidate(seed: int) -> None:
    """Export scores every (min component, keep peak, min peak) from one labelling; each score must equal
    running post-processing with those settings and scoring its mask (with and without blood)."""
    rng = np.random.default_rng(seed)
    prob = ndimage.gaussian_filter(rng.random((6, 40, 40)), 1.5).astype(np.float32)
    prob = (prob - prob.min()) / (prob.max() - prob.min())
    label = (ndimage.gaussian_filter(rng.random((6, 40, 40)), 2) > 0.52).astype(np.uint8)
    spacing, threshold = (5.0, 0.5, 0.5), 0.6
    mask = prob >= threshold
    pairs = [(ml, peak, low) for ml in (0.0, 0.005, 0.02, 0.1, 1.0) for peak in (1.0, 0.97, 0.9, 0.7)
             for low in (0.0, 0.8, 0.95)]
    fallback = most_probable_region(prob, max(1, int(PostprocessConfig().fallback_max_ml / voxel_ml(spacing))))
    for truth in (label, np.zeros_like(label)):
        scores = export_module._component_scores(prob, mask, truth, spacing, fallback, pairs)
        for (ml, peak, low), score in zip(pairs, scores, strict=True):
            config = PostprocessConfig(ml, never_empty=True, keep_peak=peak, min_peak=low)
            cleaned = postprocess(prob, spacing, threshold, config)
            expected = dice(cleaned.mask, truth) if truth.any() else float(not cleaned.mask.any() or cleaned.fallback)
            assert score == pytest.approx(expected), (ml, peak, low)
    assert len({round(v, 9) for v in export_module._component_scores(prob, mask, label, spacing, fallback, pairs)}) > 3


@pytest.mark.parametrize("seed", range(3))
def test_single_slice_scores_equal_postprocessing_each_slice_alone(seed: int) -> None:
    """Export scores each held-out slice as a one-slice input from one labelling of the volume; each
    score must equal post-processing that slice alone with the candidate as its single-slice minimum."""
    rng = np.random.default_rng(seed)
    prob = ndimage.gaussian_filter(rng.random((8, 40, 40)), (0, 1.5, 1.5)).astype(np.float32)
    prob = (prob - prob.min()) / (prob.max() - prob.min())
    label = (ndimage.gaussian_filter(rng.random((8, 40, 40)), 2) > 0.52).astype(np.uint8)
    label[5:] = 0  # slices without blood: the negatives
    label[4, :, :] = 0
    label[4, 0, :3] = 1  # under SLICE_BLOOD_PIXELS: neither positive nor negative
    intracranial = np.ones(8, dtype=bool)
    intracranial[7] = False  # no intracranial space: not scored
    spacing, threshold = (5.0, 0.5, 0.5), 0.6
    candidates = [(ml, peak, low) for ml in (0.0, 0.005, 0.02, 0.1) for peak in (1.0, 0.9) for low in (0.0, 0.9)
                  if ml or peak >= 1.0]
    mask = prob >= threshold
    fallbacks = export_module._slice_fallbacks(prob, label, spacing, None)
    scores = export_module._single_slice_scores(prob, mask, label, spacing, intracranial, fallbacks, candidates)
    positives = [z for z in range(8) if label[z].sum() >= export_module.SLICE_BLOOD_PIXELS]
    assert positives == [0, 1, 2, 3]
    for ml, peak, low in candidates:
        config = PostprocessConfig(min_component_ml=99.0, single_slice_min_component_ml=ml, never_empty=True,
                                   keep_peak=peak, min_peak=low)
        cleaned = [postprocess(prob[z:z + 1], spacing, threshold, config) for z in range(8)]
        positive = [dice(cleaned[z].mask, label[z:z + 1]) for z in positives]
        assert scores[ml, peak, low][0] == pytest.approx(positive), (ml, peak, low)
        assert scores[ml, peak, low][1] == [float(not cleaned[z].mask.any() or cleaned[z].fallback) for z in (5, 6)]


def test_cascade_stages_train_out_of_fold_and_export(dataset: Path, tmp_path: Path) -> None:
    run, weights = tmp_path / "cascade", tmp_path / "weights3d"
    common = ["--family", "cascade3d", "--init-filters", "4", "--patch", "8", "32", "32", "--folds", "2",
              "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2", "--workers", "0", "--device", "cpu",
              "--threads", "1"]
    base = ["fit", "--data", str(dataset), "--out", str(run), *common]
    assert train.main([*base, "--stage", "2"]) == 2  # stage 2 before stage 1: refused, one line
    assert train.main([*base, "--stage", "1"]) == 0
    assert train.main([*base, "--stage", "2"]) == 0
    splits = json.loads((run / "splits.json").read_text())
    oof = sorted(p.stem for p in (run / "oof_stage1").glob("*.npy"))
    assert oof == sorted(n for fold in splits for n in fold["val"])
    assert train.main(["export", "--run", str(run), "--weights", str(weights), "--min-component-ml", "0.1"]) == 0
    manifest = load_manifest(weights)
    assert manifest.family == "cascade3d" and manifest.postprocess.min_component_ml == 0.1
    stage1 = torch.load(run / "fold0/stage1/best.pt", weights_only=True)["model"]
    model = load_models(weights, manifest, torch.device("cpu"))[0]
    for key, value in stage1.items():
        torch.testing.assert_close(model.stage1.state_dict()[key], value)


def test_a_step_with_non_finite_gradients_is_skipped_not_taken(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """On the CPU no gradient scaler guards the step: one NaN gradient must not make every weight NaN.
    The first step's loss is NaN (so are its gradients); that step is skipped and said so, the next taken."""
    torch.manual_seed(0)
    model = torch.nn.Conv2d(1, 1, 3, padding=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []

    def loss_fn(out: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        loss = ((out - label) ** 2).mean()
        return loss * float("nan") if len(calls) == 1 else loss

    config = LoopConfig(epochs=1, steps_per_epoch=2, batch_size=2, lr=0.1, workers=0)
    loop_fit(model, OnesDataset(), loss_fn, [], lambda m, c: 0.0, tmp_path, config,
             DistInfo(0, 1, torch.device("cpu")))
    assert len(calls) == 2 and "1 step(s) skipped (non-finite gradients)" in capsys.readouterr().out
    after = model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values())
    assert not torch.equal(after["weight"], before["weight"])  # the finite step was taken


def test_averaging_keeps_the_mean_of_the_weights_after_each_step_from_its_epoch(tmp_path: Path) -> None:
    """SWA/SWAD: epochs 2 and 3 of three are averaged (steps 3 to 6 of 6), batch-norm statistics too, at a
    constant learning rate; the average is what is validated and saved, the raw weights kept to resume."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.BatchNorm2d(2),
                                torch.nn.Conv2d(2, 1, 1))
    seen: list[dict[str, torch.Tensor]] = []  # at call j: weights before step j, statistics after its forward

    def loss_fn(out: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return ((out - label - 0.5 * len(seen)) ** 2).mean()

    validated: list[torch.nn.Module] = []

    def val_dice(module: torch.nn.Module, case: object) -> float:
        validated.append(module)
        return float(len(validated))  # rises every epoch, so best.pt follows last.pt

    config = LoopConfig(epochs=3, steps_per_epoch=2, batch_size=2, lr=0.05, workers=0, average_from=2)
    loop_fit(model, OnesDataset(), loss_fn, [object()], val_dice, tmp_path, config,
             DistInfo(0, 1, torch.device("cpu")))
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert len(seen) == 6 and int(last["average"]["n_averaged"]) == 4
    after_step = [seen[j]["0.weight"] for j in (3, 4, 5)] + [last["trained"]["0.weight"]]  # steps 3..6
    torch.testing.assert_close(last["model"]["0.weight"], torch.stack(after_step).mean(0))
    statistics = [seen[j]["1.running_mean"] for j in (2, 3, 4, 5)]
    torch.testing.assert_close(last["model"]["1.running_mean"], torch.stack(statistics).mean(0))
    torch.testing.assert_close(last["trained"]["0.weight"], model.state_dict()["0.weight"])
    assert not torch.allclose(last["model"]["0.weight"], last["trained"]["0.weight"])
    torch.testing.assert_close(best["model"]["0.weight"], last["model"]["0.weight"])
    assert validated[0] is model and validated[1] is not model  # epoch 1 before any average
    assert [float(r["lr"]) for r in log_rows(tmp_path / "training_log.csv")] == [0.05] * 3
    with pytest.raises(ValueError, match=r"outside 0\.\.3"):
        loop_fit(model, OnesDataset(), loss_fn, [], val_dice, tmp_path, replace(config, average_from=4),
                 DistInfo(0, 1, torch.device("cpu")))


def test_bad_dataset_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert fit(tmp_path / "missing", tmp_path / "run") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "INSTANCE layout" in err[0]


def test_cache_refuses_label_of_other_shape(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "ds", 1)
    sitk.WriteImage(sitk.Image(10, 10, 3, sitk.sitkUInt8), str(root / "train/label/001.nii.gz"))
    with pytest.raises(CaseError, match=r"001\.nii\.gz: label shape"):
        training_data.cache_case(find_cases(root)[0], tmp_path / "cache")


def test_deep_supervision_weights_halve_per_level() -> None:
    loss = training_family("segresnet2d").loss()
    assert loss.get_weights(4) == [1.0, 0.5, 0.25, 0.125]
    logits = [torch.zeros(2, 1, 16, 16), torch.zeros(2, 1, 8, 8)]
    target = torch.zeros(2, 1, 16, 16)
    target[:, :, 4:12, 4:12] = 1
    single = dice_bce()
    expected = single(logits[0], target) + 0.5 * single(logits[1], target[:, :, ::2, ::2])
    torch.testing.assert_close(loss(logits, target), expected)


def test_blob_loss_weighs_a_small_bleed_as_much_as_a_large_one() -> None:
    target = torch.zeros(2, 1, 32, 32)
    target[0, 0, 2:4, 2:4] = 1  # 4 pixels
    target[0, 0, 10:30, 10:30] = 1  # 400 pixels, same sample
    logits = torch.where(target > 0, 8.0, -8.0)
    found, blob, plain = logits.clone(), BlobDice(), dice_bce()
    logits[0, 0, 2:4, 2:4] = -8.0  # the small bleed missed
    missed_small = blob(logits, target) - blob(found, target)
    assert missed_small > 0.45  # one of two bleeds lost: half the per-bleed term
    assert plain(logits, target) - plain(found, target) < 0.03  # the batch Dice hardly notices
    logits = found.clone()
    logits[0, 0, 10:30, 10:30] = -8.0  # the large one missed instead: the same per-bleed cost
    torch.testing.assert_close(blob(logits, target) - plain(logits, target), missed_small, atol=0.01, rtol=0)


def test_blob_loss_masks_other_bleeds_and_counts_false_positives() -> None:
    target = torch.zeros(1, 1, 4, 4, 4)  # 3D, as the cascade's stages train
    target[0, 0, 0, 0, :2] = 1  # bleed a
    target[0, 0, 3, 3, 2:] = 1  # bleed b
    prob = torch.full(target.shape, 0.1)
    prob[0, 0, 0, 0, :2] = 0.9
    logits = torch.logit(prob).requires_grad_()
    # by hand: each bleed against the background only (the other bleed masked out)
    background = 0.1 * (64 - 4)
    dice_a = 2 * 1.8 / (background + 1.8 + 2)
    dice_b = 2 * 0.2 / (background + 0.2 + 2)
    expected = dice_bce()(logits, target) + ((1 - dice_a) + (1 - dice_b)) / 2
    loss = BlobDice()(logits, target)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    empty = torch.zeros_like(target)  # no bleed: the seeds' loss alone
    torch.testing.assert_close(BlobDice()(logits.detach(), empty), dice_bce()(logits.detach(), empty))


def test_fit_trains_with_the_blob_loss_and_records_it(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert fit(dataset, out, "--fold", "0", "--folds", "2", "--epochs", "1", "--steps-per-epoch", "3",
               "--batch-size", "4", "--loss", "blob") == 0
    assert json.loads((out / "config.json").read_text())["training"]["loss"] == "blob"
    assert np.isfinite(float(log_rows(out / "fold0/training_log.csv")[0]["train_loss"]))


def test_fit_loss_is_chosen_by_name() -> None:
    blob = training_family("segresnet2d").loss("blob")
    assert isinstance(blob.loss, BlobDice)  # inside the deep supervision
    assert isinstance(training_family("cascade3d").loss("blob"), BlobDice)
    assert not isinstance(training_family("cascade3d").loss("dice_bce"), BlobDice)
    with pytest.raises(ValueError, match="unknown loss 'focal'"):
        segmentation_loss("focal")


def test_crops_are_drawn_from_slices_without_tissue_or_blood() -> None:
    hu = np.full((2, 40, 40), -1000.0)
    hu[1, 5:9, 5:9] = 40.0
    label = np.zeros(hu.shape, dtype=np.uint8)
    label[1, 6:8, 6:8] = 1
    centres = crop_centres(hu[0], label[0])  # only air: any voxel may be the centre
    assert len(centres["fg"]) == 0 and len(centres["bg"]) == 40 * 40
    centres = crop_centres(hu[1], label[1])  # blood, and the tissue around it
    assert len(centres["fg"]) == 4 and len(centres["bg"]) == 16 - 4


def test_balanced_sampling_draws_small_bleeds_as_often_as_large_ones(tmp_path: Path) -> None:
    hu = np.full((16, 32, 32), 30.0, dtype=np.float32)
    label = np.zeros(hu.shape, dtype=np.uint8)
    label[0:12, 4:24, 4:24] = 1  # a large bleed on twelve slices: 400 pixels each
    label[14, 28:30, 28:30] = 1  # a small one on one slice, not touching it: 4 pixels
    np.save(tmp_path / "hu.npy", hu)
    np.save(tmp_path / "label.npy", label)
    case = CachedCase("001", tmp_path / "hu.npy", tmp_path / "label.npy", (5.0, 0.9, 0.9),
                      (*range(12), 14), tuple(range(16)))
    assert lesion_slices(label) == (tuple(range(12)), (14,))

    def small_share(balance: bool) -> float:
        ds = SliceDataset([case], "windows3", (32, 32), length=400, seed=1, foreground_fraction=1.0,
                          augment=Augment(enabled=False), balance_lesions=balance)
        return float(np.mean([ds[i]["label"].sum().item() == 4 for i in range(len(ds))]))

    assert small_share(False) < 0.15  # 1 blood slice in 13
    assert 0.4 < small_share(True) < 0.6  # 1 bleed in 2


@pytest.mark.parametrize("family", ["2d", "3d"])
def test_hu_offset_moves_a_whole_sample(tmp_path: Path, family: str) -> None:
    """``offset_hu`` adds one constant to every voxel of a sample before windowing (every window sees the
    same HU), uniform in +-offset_hu, for about half the samples; 0 draws nothing. Both families."""
    for kind, array in (("data", np.full((12, 64, 64), 30, np.int16)), ("label", np.zeros((12, 64, 64), np.uint8))):
        (tmp_path / "train" / kind).mkdir(parents=True)
        sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / "train" / kind / "001.nii.gz"))
    cached = cache_case(find_cases(tmp_path)[0], tmp_path / "cache")
    plain = Augment(affine_prob=0.0, noise_std=0.0, intensity_scale=0.0, intensity_shift=0.0, noise_hu=0.0)

    def offsets(largest: float) -> np.ndarray:
        augment = Augment(**{**plain.__dict__, "offset_hu": largest})
        ds = SliceDataset([cached], "windows3", (32, 32), length=160, seed=4, augment=augment) if family == "2d" \
            else PatchDataset([cached], (12, 32, 32), length=160, seed=4, augment=augment)
        middle = (slice(None), slice(12, 20), slice(12, 20)) if family == "2d" else \
            (slice(None), slice(4, 8), slice(12, 20), slice(12, 20))  # the Gaussian smoothing darkens the edges
        images = torch.stack([ds[i]["image"][middle].reshape(3, -1) for i in range(len(ds))])
        hu = images[:, 1].mean(dim=1).numpy() * 200.0 - 20.0 - 30.0  # the -20..180 window, read back
        brain = images[:, 0].mean(dim=1).numpy() * 80.0 - 30.0  # the 0..80 window agrees
        np.testing.assert_allclose(brain, hu, atol=0.05)
        return hu

    np.testing.assert_allclose(offsets(0.0), 0.0, atol=0.05)
    moved = offsets(10.0)
    assert np.abs(moved).max() <= 10.05
    assert 0.3 < np.mean(np.abs(moved) > 0.05) < 0.7
    assert moved.min() < -5.0 and moved.max() > 5.0


@pytest.mark.parametrize("family", ["2d", "3d"])
def test_scanner_augmentation_changes_contrast_and_sharpness_reproducibly(tmp_path: Path, family: str) -> None:
    """``Augment(scanner=True)`` adds gamma, sharpening and low resolution: with every other change off,
    some samples differ from the plain ones, and a seed gives the same samples twice. Both families."""
    rng = np.random.default_rng(0)
    for kind, array in (("data", rng.normal(30, 20, (12, 64, 64)).astype(np.int16)),
                        ("label", np.zeros((12, 64, 64), np.uint8))):
        (tmp_path / "train" / kind).mkdir(parents=True)
        sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / "train" / kind / "001.nii.gz"))
    cached = cache_case(find_cases(tmp_path)[0], tmp_path / "cache")
    plain = Augment(rotate_deg=0.0, affine_prob=0.0, noise_std=0.0, intensity_scale=0.0, intensity_shift=0.0,
                    noise_hu=0.0)

    def samples(scanner: bool) -> torch.Tensor:
        augment = Augment(**{**plain.__dict__, "scanner": scanner})
        ds = SliceDataset([cached], "windows3", (32, 32), length=40, seed=4, augment=augment) if family == "2d" \
            else PatchDataset([cached], (12, 32, 32), length=40, seed=4, augment=augment)
        return torch.stack([ds[i]["image"] for i in range(len(ds))])

    without, with_scanner = samples(False), samples(True)
    changed = (with_scanner - without).abs().flatten(1).amax(dim=1) > 1e-3
    assert 0.2 < changed.float().mean() < 0.9  # gamma 0.3, sharpening and low resolution 0.15 each
    torch.testing.assert_close(samples(True), with_scanner)


def test_tuning_scores_the_floor_rule_it_is_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tuning applies ``max_floor_share`` as post-processing will: a normal head whose only finding
    (1.5 mL, peak 1.0, too large and too sure for the component rules) lies on the skull's floor scores
    1 with the rule and 0 without it."""
    hu = np.full((6, 40, 40), 30.0, dtype=np.float32)
    hu[0] = 900.0  # the floor of the skull under slice 1
    hu[:, :2], hu[:, -2:], hu[:, :, :2], hu[:, :, -2:] = 900.0, 900.0, 900.0, 900.0  # its wall: the hull
    finding = np.zeros(hu.shape, dtype=np.float32)
    finding[1, 5:35, 5:35] = 1.0  # 900 pixels of 0.9 × 0.9 × 5 mm: 3.6 mL, all on bone
    np.save(tmp_path / "hu.npy", hu)
    np.save(tmp_path / "label.npy", np.zeros(hu.shape, dtype=np.uint8))
    case = CachedCase("001", tmp_path / "hu.npy", tmp_path / "label.npy", (5.0, 0.9, 0.9), (), tuple(range(6)))
    monkeypatch.setattr(export_module, "predict_case", lambda models, manifest, case, device: finding)
    config = {"family": "segresnet2d", "input_mode": "windows3", "network": {"init_filters": 8},
              "inference": {"spacing_zyx": [None, 0.9, 0.9]}}

    def best(share: float) -> float:
        tuning = export_module.tune_out_of_fold([(case, [])], config, 0.5, torch.device("cpu"), (32,),
                                                intracranial_share=0.5, max_floor_share=share)
        return tuning["oof_score"]

    assert best(0.5) == 1.0 and best(1.0) == 0.0


def test_tuning_scores_one_slice_inputs_with_the_space_they_get(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A slice run alone has no cavity to follow (:func:`model.anatomy.cranial_cavity` needs three slices):
    its filter keeps a finding in the temporalis that the volume's cavity removes. Export's one-slice
    scores must see that finding as inference on that slice alone would, not the volume's cavity."""
    hu, spacing = skull_base_head()
    label = np.zeros(hu.shape, dtype=np.uint8)
    label[4:6, 60:70, 60:70] = 1  # a bleed in the brain, found
    finding = label.astype(np.float32)
    finding[:3, 56:72, 12:26] = 1.0  # and the muscle of the three skull-base slices, 0.28 mL in each
    config_alone = PostprocessConfig(intracranial_share=0.5, single_slice_min_component_ml=0.0)
    alone = [postprocess(finding[z:z + 1], spacing, 0.5, config_alone, hu=hu[z:z + 1]).mask for z in range(3)]
    assert all(mask.any() for mask in alone)  # inference, one slice at a time, keeps it
    assert not postprocess(finding, spacing, 0.5, config_alone, hu=hu).mask[:3].any()  # the volume does not
    np.save(tmp_path / "hu.npy", hu)
    np.save(tmp_path / "label.npy", label)
    case = CachedCase("001", tmp_path / "hu.npy", tmp_path / "label.npy", spacing, (), tuple(range(8)))
    monkeypatch.setattr(export_module, "predict_case", lambda models, manifest, case, device: finding)
    config = {"family": "segresnet2d", "input_mode": "windows3", "network": {"init_filters": 8},
              "inference": {"spacing_zyx": [None, 0.5, 0.5]}}
    tuning = export_module.tune_out_of_fold([(case, [])], config, 0.5, torch.device("cpu"), (32,),
                                            intracranial_share=0.5)
    assert tuning["oof_score"] == 1.0  # the volume: the bleed, and the muscle gone
    # one-slice inputs: the bleed's two slices 1.0; of the six without blood, three painted: (1 + 3 / 6) / 2
    assert tuning["single_slice_oof_dice"]["0.0"] == pytest.approx(0.75)
