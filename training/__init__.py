"""Training of both model families: cases and folds, datasets, the loop, DDP set-up, export to weights/."""
