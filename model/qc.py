"""A picture per case (``process.py --qc``): the slices with most blood, brain window, mask outlined.

A reader checks a case at a glance without a viewer: up to six axial slices (those with the most
mask voxels; evenly spaced through the middle of the head when the mask is empty) in the brain
window [0, 80] HU, the mask's outline in red, the case name and volume in the title. Drawn with
Pillow and numpy only (no matplotlib in the container); tiles are small, so it costs a few tens of
milliseconds against the seconds a case takes (docs/robustness.md gives the measurement).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from model.atomic import atomic_path
from model.windowing import BRAIN_WINDOW

TILE = 256  # pixels across one slice
MAX_SLICES = 6
COLUMNS = 3
TITLE_HEIGHT = 28
OUTLINE_RGB = (255, 40, 40)


def pick_slices(mask: np.ndarray, count: int = MAX_SLICES) -> list[int]:
    """The ``count`` slices with most mask voxels, in slice order; without blood, the middle half evenly."""
    blood = np.count_nonzero(mask.reshape(mask.shape[0], -1), axis=1)
    if blood.any():
        ranked = np.argsort(-blood, kind="stable")[: min(count, int((blood > 0).sum()))]
        return sorted(int(i) for i in ranked)
    depth = mask.shape[0]
    picks = np.linspace((depth - 1) * 0.25, (depth - 1) * 0.75, num=min(count, depth))
    return sorted({round(float(p)) for p in picks})


def _outline(mask: np.ndarray) -> np.ndarray:
    """Mask voxels with a 4-neighbour outside the mask (the border drawn over the CT)."""
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def _tile(hu: np.ndarray, mask: np.ndarray, size: tuple[int, int]) -> Image.Image:
    low, high = BRAIN_WINDOW
    grey = (np.clip((hu - low) / (high - low), 0.0, 1.0) * 255).astype(np.uint8)
    picture = Image.fromarray(grey).resize(size, Image.Resampling.BILINEAR).convert("RGB")
    scaled = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)) > 0
    pixels = np.array(picture)
    pixels[_outline(scaled)] = OUTLINE_RGB
    return Image.fromarray(pixels)


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=15)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def montage(hu: np.ndarray, mask: np.ndarray, spacing_zyx: tuple[float, ...], title: str) -> Image.Image:
    """The picture for a canonical (z, y, x) HU array and its mask; pixels shown square in mm."""
    slices = pick_slices(mask)
    height_mm, width_mm = hu.shape[1] * spacing_zyx[1], hu.shape[2] * spacing_zyx[2]
    size = (TILE, max(1, min(4 * TILE, round(TILE * height_mm / width_mm))))
    columns = min(COLUMNS, len(slices))
    rows = -(-len(slices) // columns)
    sheet = Image.new("RGB", (columns * size[0], TITLE_HEIGHT + rows * size[1]), "black")
    draw = ImageDraw.Draw(sheet)
    font = _font()
    for n, z in enumerate(slices):
        x, y = (n % columns) * size[0], TITLE_HEIGHT + (n // columns) * size[1]
        sheet.paste(_tile(hu[z], mask[z].astype(bool), size), (x, y))
        draw.text((x + 4, y + 4), f"z {z}", fill="yellow", font=font)
    try:
        draw.text((6, 6), title, fill="white", font=font)
    except UnicodeEncodeError:  # the bitmap font is Latin-1 only
        draw.text((6, 6), title.encode("ascii", "replace").decode(), fill="white", font=font)
    return sheet


def write_qc_png(hu: np.ndarray, mask: np.ndarray, spacing_zyx: tuple[float, ...], title: str, path: Path) -> None:
    """Draw the montage and write it under a temporary name, then rename (never a half-written PNG)."""
    picture = montage(hu, mask, spacing_zyx, title)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
