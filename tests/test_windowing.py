"""Windowing: values at the window edges and the channel layout of every input mode."""

import pytest
import torch

from model.windowing import BRAIN_WINDOW, CHANNELS, WINDOWS, apply_window, window_slices, window_volume


@pytest.mark.parametrize("window", WINDOWS)
def test_window_edges_map_to_zero_and_one(window):
    low, high = window
    hu = torch.tensor([low - 1000, low - 0.5, low, (low + high) / 2, high, high + 0.5, 3000.0])
    assert apply_window(hu, window).tolist() == pytest.approx([0, 0, 0, 0.5, 1, 1, 1])


def test_spec_windows():
    assert WINDOWS == ((0, 80), (-20, 180), (-150, 230))


def volume(depth=5):
    # every slice distinct so a wrong neighbour is detected: slice k holds HU 10*k + x
    z = torch.arange(depth, dtype=torch.float32)[:, None, None] * 10
    x = torch.arange(6, dtype=torch.float32)[None, None, :]
    return (z + x).expand(depth, 4, 6).clone()


def test_windows3_layout():
    hu = volume()
    out = window_slices(hu, "windows3")
    assert out.shape == (5, 3, 4, 6)
    for w, window in enumerate(WINDOWS):
        torch.testing.assert_close(out[:, w], apply_window(hu, window))


def test_slices3_layout_with_replicated_edges():
    hu = volume()
    out = window_slices(hu, "slices3")
    brain = apply_window(hu, BRAIN_WINDOW)
    assert out.shape == (5, 3, 4, 6)
    for z in range(5):
        torch.testing.assert_close(out[z, 0], brain[max(z - 1, 0)])
        torch.testing.assert_close(out[z, 1], brain[z])
        torch.testing.assert_close(out[z, 2], brain[min(z + 1, 4)])


def test_combined9_is_slice_major():
    hu = volume()
    out = window_slices(hu, "combined9")
    assert out.shape == (5, 9, 4, 6)
    for z in range(5):
        for s, neighbour in enumerate((max(z - 1, 0), z, min(z + 1, 4))):
            for w, window in enumerate(WINDOWS):
                torch.testing.assert_close(out[z, 3 * s + w], apply_window(hu[neighbour], window))


def test_single_slice_volume_replicates_itself():
    out = window_slices(volume(1), "slices3")
    torch.testing.assert_close(out[0, 0], out[0, 2])


@pytest.mark.parametrize("mode", sorted(CHANNELS))
def test_channel_counts_and_range(mode):
    hu = torch.randn(3, 8, 8) * 500
    out = window_slices(hu, mode)
    assert out.shape[1] == CHANNELS[mode]
    assert out.min() >= 0 and out.max() <= 1


def test_volume_layout_for_3d():
    hu = volume()
    assert window_volume(hu).shape == (3, 5, 4, 6)
    torch.testing.assert_close(window_volume(hu)[:, 2], window_slices(hu, "windows3")[2])


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown input mode"):
        window_slices(volume(), "rgb")
