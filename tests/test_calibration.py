"""The brain's HU level and the shift into the trained range (model.calibration), and the predictor using it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.calibration import brain_level, hu_shift
from model.predictor import EnsemblePredictor
from model.weights import Manifest, WeightsError, load_manifest, load_models
from tests.conftest import tiny_weights

SPACING = (5.0, 0.45, 0.45)


def brain_head(shape: tuple[int, int, int] = (8, 256, 256), seed: int = 0) -> np.ndarray:
    """float32 HU: air, a 1200 HU skull, white matter 26, a grey-matter rim 38, CSF ventricles 8, noise 5."""
    rng = np.random.default_rng(seed)
    _, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    r = np.broadcast_to(((y - shape[1] / 2) / (shape[1] * 0.42)) ** 2 + ((x - shape[2] / 2) / (shape[2] * 0.38)) ** 2,
                        shape)
    hu = np.full(shape, -1000.0, dtype=np.float32)
    hu[r < 1.0] = 1200.0
    hu[r < 0.85] = 38.0
    hu[r < 0.55] = 26.0
    hu[r < 0.04] = 8.0
    return hu + rng.normal(0.0, 5.0, shape).astype(np.float32)


def test_the_level_follows_a_calibration_offset_and_ignores_a_large_bleed():
    head = brain_head()
    level = brain_level(head, SPACING)
    assert level is not None and 26.0 < level < 38.0  # between white and grey matter
    shifted = head.copy()
    shifted[head > -500] += 10.0  # the whole scan, as a miscalibrated scanner
    assert brain_level(shifted, SPACING) == pytest.approx(level + 10.0, abs=0.05)
    bleed = head.copy()
    bleed[2:6, 100:140, 90:130] = 70.0 + np.random.default_rng(1).normal(0, 5, (4, 40, 40))  # 6.5 % of the brain
    assert abs(brain_level(bleed, SPACING) - level) < 1.0


def test_no_level_without_a_skull_or_without_enough_brain():
    assert brain_level(np.full((4, 64, 64), -1000.0, dtype=np.float32), SPACING) is None
    head = brain_head()
    head[(head > 0) & (head < 100)] = 300.0  # no parenchyma left inside the skull
    assert brain_level(head, SPACING) is None


@pytest.mark.parametrize(("level", "expected"), [(30.0, 0.0), (40.0, 6.0), (12.0, -8.0), (None, 0.0)])
def test_the_shift_brings_the_level_to_the_nearest_end_of_the_trained_range(level, expected):
    assert hu_shift(level, (20.0, 34.0)) == pytest.approx(expected)
    assert hu_shift(40.0, None) == 0.0  # weights without a measured range: never shifted


def test_the_manifest_refuses_a_reversed_range():
    with pytest.raises(WeightsError, match="brain_hu"):
        Manifest.from_dict({"family": "segresnet2d", "input_mode": "windows3", "folds": [{"file": "f", "sha256": "-"}],
                            "inference": {"brain_hu": [34.0, 20.0]}})


def test_a_miscalibrated_scan_is_predicted_as_the_calibrated_one(tmp_path):
    head = brain_head((4, 256, 256))
    level = brain_level(head, SPACING)
    shifted = head.copy()
    shifted[head > -500] += 10.0

    def predictor(brain_hu: list[float] | None) -> EnsemblePredictor:
        folder = tmp_path / str(brain_hu)
        tiny_weights(folder, inference={"batch_size": 4, "brain_hu": brain_hu})
        manifest = load_manifest(folder)
        return EnsemblePredictor(load_models(folder, manifest, torch.device("cpu")), manifest, torch.device("cpu"))

    plain = predictor(None)
    assert plain.predict(shifted, SPACING).hu_shift == 0.0
    assert not np.allclose(plain.predict(shifted, SPACING).prob, plain.predict(head, SPACING).prob, atol=1e-3)
    calibrated = predictor([round(level, 3), round(level, 3)])
    moved = calibrated.predict(shifted, SPACING)
    assert moved.hu_shift == pytest.approx(10.0, abs=0.05)
    # the air outside the head moved too, which changes nothing the windows see (all clip below -150 HU)
    np.testing.assert_allclose(moved.prob, calibrated.predict(head, SPACING).prob, atol=2e-3)
