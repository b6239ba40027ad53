"""The real-heads check: thick slabs keep the head and its spacing, and every available head is reported."""

from __future__ import annotations

import numpy as np
import pytest

from bench import real_heads
from model.predictor import PAD_HU


def test_slabs_average_consecutive_slices_and_scale_the_spacing():
    hu = np.arange(7 * 2 * 2, dtype=np.float32).reshape(7, 2, 2)
    thick, spacing = real_heads.slabs(hu, (1.0, 0.5, 0.5), 3)
    assert thick.shape == (2, 2, 2) and spacing == (3.0, 0.5, 0.5)  # the seventh slice is dropped
    np.testing.assert_allclose(thick[1], hu[3:6].mean(axis=0))


def test_a_tilted_gantry_moves_each_slice_along_y_by_its_height():
    hu = np.full((5, 20, 4), PAD_HU, dtype=np.float32)
    hu[:, 10, :] = 1000.0  # a line through every slice, at the same y
    spacing = (2.0, 0.5, 0.5)
    out = real_heads.tilted(hu, spacing, 18.5)
    step = np.tan(np.radians(18.5)) * 2.0 / 0.5  # 1.34 pixels per slice
    y = np.arange(20)
    for z in range(5):
        bright = out[z, :, 0] - PAD_HU
        assert np.sum(y * bright) / np.sum(bright) == pytest.approx(10 + (z - 2) * step, abs=0.01)


def test_every_available_head_gets_a_line(weights_factory, capsys):
    weights = weights_factory()
    assert real_heads.main(["--weights", str(weights)]) == 0
    printed = capsys.readouterr().out
    lines = [line for line in printed.splitlines() if "mL" in line and "alone" not in line]
    heads = int(printed.split("heads=")[1].split()[0])
    assert len(lines) == heads == 5  # CI installs both sources (scripts/install.sh)
    assert "invesalius 4.8 mm" in printed and "pydicom 2 mm" in printed and "invesalius tilted 18.5°, 1.9 mm" in printed
    alone = [line for line in printed.splitlines() if "each slice alone" in line]
    assert [line.split(",")[0] for line in alone] == ["invesalius 4.8 mm", "pydicom 4 mm"]
    assert float(printed.split("max_single_slice_ml=")[1].split()[0]) >= 0.0
