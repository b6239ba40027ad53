"""The review flag: cases whose fold models disagree, which a person should look at first.

Every fold is a model in its own right; where they agree the ensemble's mask is as good as the model
gets, and where they split (one fold paints a region the others leave, or they draw one bleed very
differently) the mask is least trustworthy. Measured on held-out generated cases (README, "Review
flag"), the folds' mean pairwise Dice separates the worst cases: the threshold is the manifest's
``inference.review_min_fold_dice`` and the flag is raised only when some fold found at least
``review_min_ml`` (specks a single fold paints on a normal head are not worth a person's time).
A mask made by the never-empty fallback is not flagged: results.json says ``fallback: true`` for it,
and on the held-out cases it was most often a normal head.

A skull wider than any head (``MAX_SKULL_MM``, by :func:`model.anatomy.skull_extent_mm`) is flagged too:
its pixel spacing is most likely wrong (an image converted with a default 1 mm spacing), and the
folds, which see every case at their trained pixel size, then see a head twice its size or more.
On 15 generated slices whose spacing was doubled the mean Dice fell from 0.85 to 0.77.
"""

from __future__ import annotations

from model.predictor import Prediction
from model.settings import Inference

MAX_SKULL_MM = 240.0  # heads measure 119–174 mm (model.anatomy.skull_extent_mm), the longest adult skulls about 205


def review(prediction: Prediction, inference: Inference, skull_mm: float | None = None) -> dict:
    """results.json's fields: the folds' agreement, the skull's extent, ``review`` and, when raised, its
    ``review_reason``."""
    min_dice, min_ml = inference.review_min_fold_dice, inference.review_min_ml
    fold_ml = prediction.fold_ml
    largest = max(fold_ml) if fold_ml else None
    record: dict = {"fold_dice": round(prediction.fold_dice, 4), "fold_ml": list(fold_ml) if fold_ml else None,
                    "skull_extent_mm": None if skull_mm is None else round(skull_mm, 1)}
    reasons = []
    if len(prediction.fold_voxels) > 1 and prediction.fold_dice < min_dice and (largest is None or largest >= min_ml):
        reasons.append(f"folds disagree: mean pairwise Dice {prediction.fold_dice:.2f} < {min_dice:.2f}"
                       + (f" (fold volumes {', '.join(f'{v:.2f}' for v in fold_ml)} mL)" if fold_ml else ""))
    if skull_mm is not None and skull_mm > MAX_SKULL_MM:
        reasons.append(f"the skull is {skull_mm:.0f} mm across, larger than any head: the pixel spacing is "
                       "likely wrong")
    record["review"] = bool(reasons)
    if reasons:
        record["review_reason"] = "; ".join(reasons)
    return record
