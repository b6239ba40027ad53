"""Dice overlap of binary masks: the fold agreement of results.json, training's validation, the metrics.

One formula for NumPy arrays and torch tensors alike; callers differ only in what an empty pair scores
(the INSTANCE script smooths, the fold agreement counts two empty masks as agreeing).
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np


def dice(a: Any, b: Any, smooth: float = 0.0, empty: float = 1.0) -> float:
    """2 |A ∩ B| / (|A| + |B|) of two boolean masks (NumPy or torch).

    ``smooth`` is added to numerator and denominator (the official INSTANCE smoothing); without it,
    two empty masks score ``empty``.
    """
    total = int(a.sum()) + int(b.sum())
    if total == 0 and smooth == 0.0:
        return empty
    return (2.0 * int((a & b).sum()) + smooth) / (total + smooth)


def mean_pairwise_dice(masks: list[Any]) -> float:
    """Mean Dice over every pair of masks (a pair of empty masks agrees: 1.0); 1.0 for a single mask."""
    scores = [dice(a, b) for a, b in combinations(masks, 2)]
    return float(np.mean(scores)) if scores else 1.0
