"""The INSTANCE metrics against an independent reference written here, not MONAI's code path.

The reference follows DeepMind's surface-distance definition by brute force: surface elements are
the voxel corners whose eight neighbouring voxels are mixed, found by explicit shifts; distances are
SciPy's exact Euclidean distance transform over the corner grid; areas are the marching-cubes
polygons of the corner cell computed geometrically. Masks here are boxes, whose cells hold only
planar polygons (a corner triangle, an edge rectangle or a face square), so the areas need no
triangulation table; the reference refuses any other cell rather than guess.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import ndimage

from evaluation.metrics import EmptyLabelError, binarise, relative_volume_difference, score_case

SPACINGS = {"unit": (1.0, 1.0, 1.0), "5mm": (5.0, 0.45, 0.45), "10mm": (10.0, 0.45, 0.45),
            "float32 pixdim": (float(np.float32(5.0)), float(np.float32(0.45)), float(np.float32(0.45)))}


def _neighbourhoods(mask: np.ndarray) -> np.ndarray:
    """For every voxel corner (n + 1 per axis), its eight neighbouring voxels, shape (..., 2, 2, 2)."""
    padded = np.pad(mask.astype(bool), 1)
    corners = tuple(n + 1 for n in mask.shape)
    out = np.zeros((*corners, 2, 2, 2), bool)
    for a, b, c in itertools.product((0, 1), repeat=3):
        out[..., a, b, c] = padded[a: a + corners[0], b: b + corners[1], c: c + corners[2]]
    return out


def _cell_area(cell: np.ndarray, s: tuple[float, float, float]) -> float:
    """Marching-cubes surface area inside one corner cell whose inside voxels form a box face, edge or corner."""
    inside = np.argwhere(cell)
    count = len(inside)
    if count not in (1, 2, 4) and 8 - count in (1, 2, 4):
        inside, count = np.argwhere(~cell), 8 - count  # the complement has the same polygon
    varying = [axis for axis in range(3) if len(set(inside[:, axis])) > 1]
    if count == 1:  # triangle through the three edge midpoints around one corner
        return math.sqrt((s[1] * s[2]) ** 2 + (s[0] * s[2]) ** 2 + (s[0] * s[1]) ** 2) / 8
    if count == 2 and len(varying) == 1:  # rectangle along an edge, cutting the other two axes at 45°
        a = varying[0]
        b, c = (x for x in range(3) if x != a)
        return s[a] * math.hypot(s[b], s[c]) / 2
    if count == 4 and len(varying) == 2:  # square parallel to a face, half way across the cell
        return s[varying[0]] * s[varying[1]]
    raise AssertionError(f"reference handles box masks only, got cell\n{cell.astype(int)}")


def reference(pred: np.ndarray, label: np.ndarray, spacing: tuple[float, float, float], areas: bool = True) -> dict:
    """DSC, RVD, HD and NSD per DeepMind's and the organisers' definitions, computed by brute force."""
    pred, label = pred.astype(bool), label.astype(bool)
    result = {"dsc": (2 * np.sum(pred & label) + 1e-5) / (pred.sum() + label.sum() + 1e-5),
              "rvd": abs((pred.sum() - label.sum()) / label.sum()) if label.sum() else math.nan}
    cells = {}
    border = {}
    for name, mask in (("pred", pred), ("label", label)):
        cells[name] = _neighbourhoods(mask)
        occupied = cells[name].reshape(*cells[name].shape[:3], 8).sum(-1)
        border[name] = (occupied > 0) & (occupied < 8)
    dist = {}
    for source, target in (("pred", "label"), ("label", "pred")):
        if not border[source].any():
            dist[source] = np.zeros(0)
        elif not border[target].any():
            dist[source] = np.full(int(border[source].sum()), np.inf)
        else:
            dist[source] = ndimage.distance_transform_edt(~border[target], sampling=spacing)[border[source]]
    empty = dist["pred"].size == 0 or dist["label"].size == 0
    result["hd"] = math.inf if empty else max(dist["pred"].max(), dist["label"].max())
    if areas:
        area = {n: np.array([_cell_area(c, spacing) for c in cells[n][border[n]]]) for n in cells}
        total = area["pred"].sum() + area["label"].sum()
        within = area["pred"][dist["pred"] <= 0.42].sum() + area["label"][dist["label"] <= 0.42].sum()
        result["nsd"] = within / total if total else math.nan
    return result


def box(shape: tuple[int, int, int], low: tuple[int, int, int], high: tuple[int, int, int]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[low[0]: high[0], low[1]: high[1], low[2]: high[2]] = 1
    return mask


SHAPE = (9, 14, 12)
EMPTY = np.zeros(SHAPE, np.uint8)
CONFIGURATIONS = {
    "partial overlap": (box(SHAPE, (2, 3, 2), (6, 10, 8)), box(SHAPE, (3, 5, 4), (7, 12, 11))),
    "slight shift": (box(SHAPE, (2, 3, 2), (6, 10, 8)), box(SHAPE, (2, 4, 2), (6, 11, 8))),
    "identical": (box(SHAPE, (2, 3, 2), (6, 10, 8)), box(SHAPE, (2, 3, 2), (6, 10, 8))),
    "disjoint": (box(SHAPE, (1, 1, 1), (3, 4, 4)), box(SHAPE, (5, 8, 7), (8, 13, 11))),
    "one voxel": (box(SHAPE, (4, 6, 5), (5, 7, 6)), box(SHAPE, (4, 6, 6), (5, 7, 7))),
    "one voxel vs box": (box(SHAPE, (4, 6, 5), (5, 7, 6)), box(SHAPE, (3, 5, 4), (6, 9, 8))),
    "touching the border": (box(SHAPE, (0, 0, 0), (4, 14, 5)), box(SHAPE, (0, 2, 0), (9, 14, 12))),
    "empty prediction": (EMPTY, box(SHAPE, (2, 3, 2), (6, 10, 8))),
    "empty label": (box(SHAPE, (2, 3, 2), (6, 10, 8)), EMPTY),
    "both empty": (EMPTY, EMPTY),
}


def _assert_close(actual: float, expected: float) -> None:
    if math.isnan(expected) or math.isinf(expected):
        assert (math.isnan(actual) and math.isnan(expected)) or actual == expected, (actual, expected)
    else:
        assert actual == pytest.approx(expected, abs=1e-6, rel=1e-9)


@pytest.mark.parametrize("spacing", SPACINGS.values(), ids=SPACINGS.keys())
@pytest.mark.parametrize("config", CONFIGURATIONS, ids=CONFIGURATIONS.keys())
def test_metrics_match_brute_force_reference(config: str, spacing: tuple[float, float, float]) -> None:
    pred, label = CONFIGURATIONS[config]
    expected = reference(pred, label, spacing)
    got = score_case(pred, label, spacing)
    for metric in ("dsc", "hd", "rvd", "nsd"):
        _assert_close(getattr(got, metric), expected[metric])


def test_metrics_do_not_depend_on_axis_order() -> None:
    """The official script scores (x, y, z) arrays with pixdim; SimpleITK gives (z, y, x): same numbers."""
    pred, label = CONFIGURATIONS["partial overlap"]
    zyx = score_case(pred, label, (5.0, 0.45, 0.45))
    xyz = score_case(pred.transpose(), label.transpose(), (0.45, 0.45, 5.0))
    for metric in ("dsc", "hd", "rvd", "nsd"):
        assert getattr(zyx, metric) == pytest.approx(getattr(xyz, metric), abs=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_hausdorff_of_irregular_masks_matches_reference(seed: int) -> None:
    """Irregular blobs (cells of every kind): the surface positions, hence HD, still match the reference."""
    rng = np.random.default_rng(seed)

    def blob() -> np.ndarray:
        field = ndimage.gaussian_filter(rng.random((10, 18, 16)), 1.5)
        return (field > np.quantile(field, rng.uniform(0.6, 0.95))).astype(np.uint8)

    pred, label = blob(), blob()
    label[:, 0, :3] = 1  # touches the border
    spacing = (5.0, 0.45, 0.45)
    assert score_case(pred, label, spacing).hd == pytest.approx(reference(pred, label, spacing, areas=False)["hd"],
                                                                abs=1e-6, rel=1e-9)


def test_known_values() -> None:
    """Hand-checked numbers: a voxel moved one 5 mm slice has its surface 5 mm away at most."""
    one = box(SHAPE, (4, 6, 5), (5, 7, 6))
    moved = box(SHAPE, (5, 6, 5), (6, 7, 6))
    got = score_case(moved, one, (5.0, 0.45, 0.45))
    assert got.hd == pytest.approx(5.0, abs=1e-9)
    assert got.rvd == 0.0
    assert got.dsc == pytest.approx(1e-5 / (2 + 1e-5))
    same = score_case(one, one, (5.0, 0.45, 0.45))
    assert (same.hd, same.nsd, same.dsc) == (0.0, 1.0, 1.0)


def test_official_values_for_empty_masks() -> None:
    """SPEC §4: empty prediction → DSC 0, RVD 1, NSD 0, HD inf; both empty → DSC 1, NSD NaN, HD inf."""
    label = CONFIGURATIONS["empty prediction"][1]
    empty_pred = score_case(EMPTY, label, (5.0, 0.45, 0.45))
    assert empty_pred.dsc == pytest.approx(0.0, abs=1e-6)
    assert (empty_pred.rvd, empty_pred.nsd, empty_pred.hd) == (1.0, 0.0, math.inf)
    both = score_case(EMPTY, EMPTY, (5.0, 0.45, 0.45))
    assert both.dsc == 1.0 and math.isnan(both.nsd) and both.hd == math.inf and math.isnan(both.rvd)
    with pytest.raises(EmptyLabelError):
        relative_volume_difference(EMPTY.astype(bool), EMPTY.astype(bool))


def test_values_are_cast_to_uint8_like_the_official_script() -> None:
    """A probability of 0.7 truncates to background; a label value of 2 still counts as foreground."""
    assert binarise(np.array([0.0, 0.7, 1.0, 2.0, 1.9])).tolist() == [False, False, True, True, True]
    label = CONFIGURATIONS["identical"][1]
    probabilities = label * 0.9
    assert score_case(probabilities, label, (1.0, 1.0, 1.0)).pred_voxels == 0


def test_shape_and_spacing_mismatch_raise() -> None:
    with pytest.raises(ValueError, match="shape mismatch"):
        score_case(np.zeros((3, 4, 5)), np.zeros((3, 4, 6)), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        score_case(np.zeros((3, 4, 5)), np.zeros((3, 4, 5)), (1.0, 1.0))


def test_crop_keeps_result_of_full_volume() -> None:
    """The same pair in a much larger volume (so cropping removes most of it) scores identically."""
    pred, label = CONFIGURATIONS["partial overlap"]
    big_pred, big_label = np.zeros((30, 60, 50), np.uint8), np.zeros((30, 60, 50), np.uint8)
    big_pred[10:19, 20:34, 15:27], big_label[10:19, 20:34, 15:27] = pred, label
    small, big = score_case(pred, label, (5.0, 0.45, 0.45)), score_case(big_pred, big_label, (5.0, 0.45, 0.45))
    for metric in ("dsc", "hd", "rvd", "nsd"):
        assert getattr(small, metric) == pytest.approx(getattr(big, metric), abs=1e-12)
