"""CT windowing: Hounsfield units clipped to windows and stacked as network input channels.

Both seed methods feed the network clipped HU windows rather than raw HU, so that the narrow range
where blood differs from brain (≈ 20–90 HU) fills the input's dynamic range. Three modes:

- ``windows3``: one slice at the three windows of SPEC §2 → channels (W1, W2, W3).
- ``slices3``: three adjacent slices (z−1, z, z+1) at the brain window → 3 channels.
- ``combined9``: both → 9 channels ordered slice-major: (z−1: W1 W2 W3, z: W1 W2 W3, z+1: W1 W2 W3).

Every window is scaled to [0, 1]. At the first and last slice the missing neighbour is the edge
slice itself (replicated), so every slice has a full set of channels.
"""

from __future__ import annotations

import torch

WINDOWS: tuple[tuple[float, float], ...] = ((0.0, 80.0), (-20.0, 180.0), (-150.0, 230.0))
BRAIN_WINDOW = WINDOWS[0]  # also what the QC picture and the evaluation report show
CHANNELS: dict[str, int] = {"windows3": 3, "slices3": 3, "combined9": 9}
NEIGHBOURS = 1  # slices read on each side of a slice by the slice modes
SLICE_CONTEXT: dict[str, int] = {"windows3": 0, "slices3": NEIGHBOURS, "combined9": NEIGHBOURS}


def apply_window(hu: torch.Tensor, window: tuple[float, float]) -> torch.Tensor:
    """Clip to the window and scale it to [0, 1]."""
    low, high = window
    return (hu.clamp(low, high) - low) / (high - low)


def neighbour_span(z: int, depth: int) -> slice:
    """The slices that slice ``z``'s input may read in any mode: itself and its neighbours, clipped to
    the volume. Windowing that span gives slice ``z``'s input at index ``z - span.start``."""
    return slice(max(z - NEIGHBOURS, 0), min(z + NEIGHBOURS + 1, depth))


def _neighbours(volume: torch.Tensor) -> torch.Tensor:
    """(Z, Y, X) → (Z, 3, Y, X): each slice with the one below and above, edges replicated."""
    padded = torch.cat([volume[:1]] * NEIGHBOURS + [volume] + [volume[-1:]] * NEIGHBOURS, dim=0)
    depth = volume.shape[0]
    return torch.stack([padded[k: k + depth] for k in range(2 * NEIGHBOURS + 1)], dim=1)


def window_slices(hu: torch.Tensor, mode: str) -> torch.Tensor:
    """Network input for every axial slice: (Z, Y, X) HU → (Z, C, Y, X) in [0, 1].

    Works on whichever device ``hu`` lives, so windowing can run on the GPU next to the network.
    """
    if mode not in CHANNELS:
        raise ValueError(f"unknown input mode {mode!r}; expected one of {sorted(CHANNELS)}")
    hu = hu.float()
    if mode == "windows3":
        return torch.stack([apply_window(hu, w) for w in WINDOWS], dim=1)
    if mode == "slices3":
        return _neighbours(apply_window(hu, BRAIN_WINDOW))
    stacked = _neighbours(hu)  # (Z, 3 slices, Y, X)
    return torch.stack([apply_window(stacked, w) for w in WINDOWS], dim=2).flatten(1, 2)


def window_volume(hu: torch.Tensor, mode: str = "windows3") -> torch.Tensor:
    """3D network input: (Z, Y, X) HU → (C, Z, Y, X); the 3D cascade uses the ``windows3`` mode."""
    return window_slices(hu, mode).transpose(0, 1)
