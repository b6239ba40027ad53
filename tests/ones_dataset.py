"""A training dataset of constant slices, for tests of the loop itself (what it learns does not matter)."""

from __future__ import annotations

import torch


class OnesDataset(torch.utils.data.Dataset):
    """Four one-channel ``side`` × ``side`` slices of ones, labels empty."""

    def __init__(self, side: int = 8) -> None:
        self.side = side

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": torch.ones(1, self.side, self.side), "label": torch.zeros(1, self.side, self.side)}

    def set_epoch(self, epoch: int) -> None:
        pass
