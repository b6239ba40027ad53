"""Fold averaging, post-processing and safe weight loading."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from model.postprocess import CONNECTIVITY, PostprocessConfig, postprocess, remove_small_components
from model.predictor import EnsemblePredictor
from model.weights import Manifest, WeightsError, load_manifest, load_models, sha256_of
from tests.conftest import head_volume, tiny_weights
from tests.skull_base import skull_base_head


class ConstantLogit(nn.Module):
    """A stand-in network answering one logit everywhere, so the ensemble mean is known exactly."""

    def __init__(self, logit: float) -> None:
        super().__init__()
        self.logit = logit

    def shape_factor(self):
        return (1, 1)

    def forward(self, x):
        return torch.full((x.shape[0], 1, *x.shape[2:]), self.logit)


def manifest(**extra):
    return Manifest.from_dict({"family": "segresnet2d", "input_mode": "windows3",
                               "folds": [{"file": "a", "sha256": "0"}], **extra})


def test_folds_are_averaged_as_probabilities():
    hu = head_volume().astype(np.float32)
    models = [ConstantLogit(2.0), ConstantLogit(-1.0), ConstantLogit(0.5)]
    prob = EnsemblePredictor(models, manifest(), torch.device("cpu"))(hu)
    expected = float(torch.sigmoid(torch.tensor([2.0, -1.0, 0.5])).mean())
    inside = hu > -500
    np.testing.assert_allclose(prob[inside], expected, rtol=1e-6)


def test_air_beyond_the_head_box_and_its_margin_gets_zero_probability():
    hu = np.full((3, 20, 20), -1000, np.float32)
    hu[1, 5:10, 6:12] = 40
    prob = EnsemblePredictor([ConstantLogit(3.0)], manifest(inference={"crop_margin": 2}), torch.device("cpu"))(hu)
    assert prob[1, 3:12, 4:14].min() > 0.9
    assert prob.sum() == pytest.approx(prob[1, 3:12, 4:14].sum())


def test_all_air_volume_predicts_nothing():
    prob = EnsemblePredictor([ConstantLogit(3.0)], manifest(), torch.device("cpu"))(np.full((2, 8, 8), -1024.0))
    assert not prob.any()


@pytest.mark.parametrize("family", ["segresnet2d", "cascade3d"])
def test_real_networks_average_matches_single_fold_runs(tmp_path, family):
    m = tiny_weights(tmp_path, family, folds=2)
    models = load_models(tmp_path, m, torch.device("cpu"))
    hu = head_volume().astype(np.float32)
    both = EnsemblePredictor(models, m, torch.device("cpu"))(hu)
    singles = [EnsemblePredictor([model], m, torch.device("cpu"))(hu) for model in models]
    np.testing.assert_allclose(both, (singles[0] + singles[1]) / 2, atol=1e-5)
    assert not np.allclose(singles[0], singles[1])


def test_mirror_averages_the_flipped_view():
    class LeftBright(ConstantLogit):
        def forward(self, x):
            out = torch.full((x.shape[0], 1, *x.shape[2:]), -4.0)
            out[..., : x.shape[-1] // 2] = 4.0
            return out
    hu = np.zeros((1, 4, 8), np.float32)
    plain = EnsemblePredictor([LeftBright(0)], manifest(), torch.device("cpu"), mirror=False)(hu)
    mirrored = EnsemblePredictor([LeftBright(0)], manifest(), torch.device("cpu"), mirror=True)(hu)
    assert plain[0, 0, 0] > 0.9 and plain[0, 0, -1] < 0.1
    np.testing.assert_allclose(mirrored, 0.5, atol=1e-6)


def test_threshold_small_components_and_never_empty():
    prob = np.zeros((4, 30, 30), np.float32)
    prob[1:3, 5:15, 5:15] = 0.9  # 200 voxels
    prob[2, 25, 25] = 0.8  # isolated voxel
    spacing = (5.0, 0.5, 0.5)  # 1.25 µL per voxel
    cleaned = postprocess(prob, spacing, 0.5, PostprocessConfig(min_component_ml=0.01))
    assert cleaned.mask.dtype == np.uint8 and cleaned.mask.sum() == 200 and cleaned.mask[2, 25, 25] == 0
    assert not cleaned.fallback
    faint = prob * 0.5  # nothing reaches 0.5
    assert postprocess(faint, spacing, 0.5, PostprocessConfig()).mask.sum() == 0
    kept = postprocess(faint, spacing, 0.5, PostprocessConfig(never_empty=True, fallback_max_ml=1.0))
    assert kept.mask.sum() == 200 and kept.mask[1, 5, 5] == 1 and kept.fallback
    empty = postprocess(np.zeros_like(prob), spacing, 0.5, PostprocessConfig(never_empty=True))
    assert empty.mask.sum() == 0 and not empty.fallback


def test_a_small_component_stays_when_its_peak_is_sure_enough():
    prob = np.zeros((4, 30, 30), np.float32)
    prob[1, 5:8, 5:8] = 0.8  # 9 voxels, unsure
    prob[2, 20:23, 20:23] = 0.8
    prob[2, 21, 21] = 0.97  # 9 voxels, one of them sure
    spacing = (5.0, 0.5, 0.5)  # 1.25 µL per voxel: 0.05 mL is 40 voxels, more than either
    sized = postprocess(prob, spacing, 0.5, PostprocessConfig(min_component_ml=0.05))
    assert sized.mask.sum() == 0
    sure = postprocess(prob, spacing, 0.5, PostprocessConfig(min_component_ml=0.05, keep_peak=0.95))
    assert sure.mask.sum() == 9 and sure.mask[2, 21, 21] == 1 and sure.mask[1, 6, 6] == 0 and not sure.fallback
    assert postprocess(prob, spacing, 0.5, PostprocessConfig(min_component_ml=0.05, keep_peak=0.98)).mask.sum() == 0


def test_a_component_without_a_sure_core_goes_whatever_its_size():
    """Hysteresis: a large component whose peak is 0.67 (two folds of three) goes with min_peak 0.9; a
    small one with a sure core stays when the size rule allows it; 0 turns the rule off."""
    prob = np.zeros((4, 40, 40), np.float32)
    prob[1, 2:22, 2:22] = 0.67  # 400 voxels, 0.5 mL at 1.25 µL
    prob[2, 30:34, 30:34] = 0.6
    prob[2, 31, 31] = 0.98  # 16 voxels with a sure core
    spacing = (5.0, 0.5, 0.5)
    sure = postprocess(prob, spacing, 0.5, PostprocessConfig(min_peak=0.9))
    assert sure.mask.sum() == 16 and sure.mask[2, 31, 31] == 1 and not sure.fallback
    assert postprocess(prob, spacing, 0.5, PostprocessConfig()).mask.sum() == 416
    both = postprocess(prob, spacing, 0.5, PostprocessConfig(min_component_ml=0.1, min_peak=0.9, never_empty=True))
    assert both.fallback and both.mask[2, 31, 31] == 1  # the sure one is too small, the large one unsure


def test_a_one_slice_input_takes_its_own_smallest_component():
    """A 0.2 mL cross-section: removed by the volume's 0.5 mL minimum in a 3-slice input, kept in a
    one-slice input with a 0.1 mL single-slice minimum; without one, a single slice takes the volume's."""
    spacing = (5.0, 0.5, 0.5)  # 1.25 µL per voxel: 0.2 mL is 160 voxels
    volume = np.zeros((3, 40, 40), np.float32)
    volume[1, 10:26, 10:20] = 0.9  # 160 voxels
    config = PostprocessConfig(min_component_ml=0.5, single_slice_min_component_ml=0.1)
    assert postprocess(volume, spacing, 0.5, config).mask.sum() == 0
    one = postprocess(volume[1:2], spacing, 0.5, config)
    assert one.mask.sum() == 160 and not one.fallback
    assert postprocess(volume[1:2], spacing, 0.5, PostprocessConfig(min_component_ml=0.5)).mask.sum() == 0
    assert config.min_component_for(1) == 0.1 and config.min_component_for(2) == 0.5


def test_never_empty_fallback_adds_at_most_its_cap_of_the_most_probable_voxels():
    rng = np.random.default_rng(0)
    prob = np.zeros((4, 30, 30), np.float32)
    prob[1:3, 5:15, 5:15] = 0.3 + 0.1 * rng.random((2, 10, 10))  # 200 voxels, all under the threshold
    spacing = (5.0, 0.5, 0.5)  # 1.25 µL per voxel: the default 0.1 mL cap is 80 voxels
    cleaned = postprocess(prob, spacing, 0.5, PostprocessConfig(never_empty=True))
    assert cleaned.fallback and 0 < cleaned.mask.sum() <= 80
    assert cleaned.mask.flat[int(np.argmax(prob))] == 1
    assert prob[cleaned.mask > 0].min() >= np.sort(prob[1:3, 5:15, 5:15].ravel())[::-1][79]
    tie = np.where(prob > 0, 0.4, 0.0).astype(np.float32)  # a flat plateau: ties are cut at the cap too
    assert postprocess(tie, spacing, 0.5, PostprocessConfig(never_empty=True)).mask.sum() == 80


@pytest.mark.parametrize("seed", range(3))
def test_small_components_go_as_labelling_the_whole_volume_would_remove_them(seed):
    """Labelling only the mask's bounding box keeps exactly the components the whole volume keeps,
    also those touching the box's and the volume's faces."""
    rng = np.random.default_rng(seed)
    mask = rng.random((12, 40, 40)) > 0.97  # scattered clusters of 1 to a few voxels
    mask[3:7, 20:24, 30:34] = True  # one larger blob
    mask[:, :2, 10] = True  # touches the volume's first row
    labels, _ = ndimage.label(mask, structure=CONNECTIVITY)
    sizes = np.bincount(labels.ravel())
    for min_voxels in (2, 5, 20):
        expected = (sizes >= min_voxels)[labels] & mask
        got = remove_small_components(mask, min_voxels)
        assert got.shape == mask.shape and np.array_equal(got, expected)
        assert 0 < got.sum() < mask.sum()  # some removed, some kept: the comparison can fail
    assert not remove_small_components(np.zeros((3, 4, 4), bool), 5).any()


def test_manifest_validation(tmp_path):
    with pytest.raises(WeightsError, match="family"):
        Manifest.from_dict({"family": "vnet", "input_mode": "windows3", "folds": [{"file": "a", "sha256": "0"}]})
    with pytest.raises(WeightsError, match="input_mode"):
        Manifest.from_dict({"family": "cascade3d", "input_mode": "slices3", "folds": [{"file": "a", "sha256": "0"}]})
    with pytest.raises(WeightsError, match="no weights manifest"):
        load_manifest(tmp_path)


def test_checkpoint_with_code_is_not_unpickled(tmp_path):
    m = tiny_weights(tmp_path, folds=1)
    torch.save({"payload": ConstantLogit(1.0)}, tmp_path / "fold0.pt")  # a pickled object, not tensors
    data = (tmp_path / "manifest.json").read_text()
    (tmp_path / "manifest.json").write_text(data.replace(m.folds[0].sha256, sha256_of(tmp_path / "fold0.pt")))
    with pytest.raises(WeightsError, match="pickled objects"):
        load_models(tmp_path, load_manifest(tmp_path), torch.device("cpu"))


def test_review_flag_is_raised_when_folds_disagree():
    from model.predictor import Prediction
    from model.review import review
    from model.settings import Inference

    agree = Prediction(np.zeros((1, 2, 2), np.float32), (100, 110), 0.9, 0.01)
    split = Prediction(np.zeros((1, 2, 2), np.float32), (100, 0), 0.0, 0.01)
    speck = Prediction(np.zeros((1, 2, 2), np.float32), (3, 0), 0.0, 0.01)  # 0.03 mL in one fold only
    settings = Inference(review_min_fold_dice=0.5, review_min_ml=0.1)
    assert review(agree, settings) == {"fold_dice": 0.9, "fold_ml": [1.0, 1.1], "skull_extent_mm": None,
                                       "review": False}
    flagged = review(split, settings)
    assert flagged["review"] and "folds disagree" in flagged["review_reason"]
    assert "1.00, 0.00 mL" in flagged["review_reason"]
    assert not review(speck, settings)["review"]


def test_review_flag_is_raised_for_a_skull_larger_than_any_head():
    from model.predictor import Prediction
    from model.review import MAX_SKULL_MM, review
    from model.settings import Inference

    agree = Prediction(np.zeros((1, 2, 2), np.float32), (100, 110), 0.9, 0.01)
    settings = Inference(review_min_fold_dice=0.5, review_min_ml=0.1)
    assert review(agree, settings, 155.04) == {"fold_dice": 0.9, "fold_ml": [1.0, 1.1], "skull_extent_mm": 155.0,
                                               "review": False}
    flagged = review(agree, settings, 2 * 155.0)
    assert flagged["review"] and flagged["skull_extent_mm"] == 310.0 > MAX_SKULL_MM
    assert flagged["review_reason"] == ("the skull is 310 mm across, larger than any head: the pixel spacing is "
                                        "likely wrong")


def test_skull_extent_is_the_largest_piece_of_bone_across():
    """A ring of bone 100 × 60 pixels across at 0.5 mm: 50 mm, whatever a head holder's rails beside it
    add; slices without bone do not count, and a volume without any gives none."""
    from model.anatomy import skull_extent_mm

    y, x = np.ogrid[:160, :160]
    r = ((y - 80) / 50.0) ** 2 + ((x - 80) / 30.0) ** 2
    hu = np.repeat(np.where((r < 1.0) & (r > 0.7), 1000.0, np.where(r < 1.0, 30.0, -1000.0))[None], 3, axis=0)
    hu[:, 20:140, 2:4] = 1000.0  # rails at the sides, apart from the skull
    hu[:, 20:140, 156:158] = 1000.0
    hu[0] = -1000.0  # above the vertex: no bone
    assert skull_extent_mm(hu, (5.0, 0.5, 0.5)) == pytest.approx(50.0, abs=1.0)
    assert skull_extent_mm(hu, (5.0, 1.0, 1.0)) == pytest.approx(100.0, abs=2.0)
    assert skull_extent_mm(np.full((2, 16, 16), -1000.0), (5.0, 0.5, 0.5)) is None


def test_fold_masks_and_agreement_come_with_the_probability():
    from model.overlap import mean_pairwise_dice

    a = torch.zeros(4, 4, dtype=torch.bool)
    a[:2] = True
    b = a.clone()
    b[:, :2] = False
    assert mean_pairwise_dice([a, a]) == 1.0 and mean_pairwise_dice([a, b]) == pytest.approx(2 * 4 / 12)
    assert mean_pairwise_dice([torch.zeros(2, dtype=torch.bool)] * 3) == 1.0 and mean_pairwise_dice([a]) == 1.0
    hu = np.full((4, 16, 16), -1000.0, np.float32)
    hu[1:3, 4:12, 4:12] = 40.0
    prediction = EnsemblePredictor([ConstantLogit(3.0), ConstantLogit(-3.0)], manifest(), torch.device("cpu")
                                   ).predict(hu, (5.0, 0.5, 0.5))
    assert prediction.fold_voxels[1] == 0 and prediction.fold_voxels[0] > 0 and prediction.fold_dice == 0.0
    assert prediction.fold_ml[0] == pytest.approx(prediction.fold_voxels[0] * 5 * 0.25 / 1000, rel=1e-3)


def test_components_outside_the_skull_are_removed_inside_ones_kept():
    from model.anatomy import blood_space

    shape = (4, 64, 64)
    _, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    r = np.broadcast_to(np.hypot(y - 32, x - 32), shape)
    hu = np.where(r < 30, 60.0, -1000.0)  # scalp
    hu = np.where(r < 27, 1000.0, hu)  # skull
    hu = np.where(r < 24, 35.0, hu).astype(np.float32)  # brain
    prob = np.zeros(shape, np.float32)
    prob[1:3, 28:36, 28:36] = 0.9  # a bleed in the brain
    prob[1:3, 60:62, 28:36] = 0.9  # the scalp at the bottom edge
    prob[1:3, 8:12, 30:34] = 0.9  # against the inner table: inside the 2 mm reach
    spacing = (5.0, 0.5, 0.5)
    inside = blood_space(hu, spacing)
    assert inside[2, 32, 32] and not inside[2, 61, 32]
    config = PostprocessConfig(intracranial_share=0.5)
    cleaned = postprocess(prob, spacing, 0.5, config, hu=hu).mask
    assert cleaned[1:3, 28:36, 28:36].all() and cleaned[1:3, 8:12, 30:34].all() and not cleaned[:, 60:62].any()
    np.testing.assert_array_equal(postprocess(prob, spacing, 0.5, config, inside=inside).mask, cleaned)
    assert postprocess(prob, spacing, 0.5, PostprocessConfig()).mask[:, 60:62].any()  # off by default
    with pytest.raises(ValueError, match="intracranial_share"):
        postprocess(prob, spacing, 0.5, config)
    faint = np.where(prob > 0, prob * 0.4, 0.0).astype(np.float32)  # nothing reaches the threshold
    faint[1:3, 60:62, 28:36] = 0.45  # the scalp most probable, the bleed inside next
    faint[1:3, 28:36, 28:36] = 0.4
    fallback = postprocess(faint, spacing, 0.5, replace(config, never_empty=True), hu=hu)
    assert fallback.fallback and fallback.mask[1:3, 28:36, 28:36].any() and not fallback.mask[:, 60:62].any()
    assert postprocess(faint, spacing, 0.5, PostprocessConfig(never_empty=True)).mask[:, 60:62].any()  # filter off


def test_blood_space_holds_the_brain_of_an_open_skull_and_not_the_scalp():
    """A skull open over a quarter of its circumference (the skull base, thin temporal bone in a thick
    slab) still encloses its brain; the filled closure of the bone (``intracranial``) encloses nothing."""
    from model.anatomy import blood_space, intracranial

    shape = (2, 64, 64)
    _, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    r = np.broadcast_to(np.hypot(y - 32, x - 32), shape)
    hu = np.where(r < 30, 60.0, -1000.0)
    hu = np.where(r < 27, 1000.0, hu)
    hu = np.where(r < 24, 35.0, hu)
    hu = np.where((r >= 24) & (y < 20) & (np.abs(x - 32) < 14), 35.0, hu).astype(np.float32)  # the gap
    spacing = (5.0, 0.5, 0.5)
    inside = blood_space(hu, spacing)
    assert not intracranial(hu, spacing).any()
    assert inside[:, 24:40, 24:40].all() and inside[:, 40:52, 30:34].all()
    assert not inside[:, 32, 61].any() and not inside[:, 61, 32].any()  # scalp beside and behind


def test_blood_space_ignores_dense_lines_outside_the_head():
    """A table or head holder denser than bone at the edge of the field of view, apart from the head,
    does not stretch the hull over the scalp: a finding in the temporalis beside the skull still goes."""
    from model.anatomy import blood_space

    shape = (3, 96, 96)
    _, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    r = np.broadcast_to(np.hypot(y - 48, x - 48), shape)
    hu = np.where(r < 34, 55.0, -1000.0)  # scalp and temporalis
    hu = np.where(r < 28, 1000.0, hu)  # skull
    hu = np.where(r < 25, 35.0, hu)  # brain
    hu = hu.astype(np.float32)
    hu[:, 10:86, 2:4] = 800.0  # a head holder's side bars, 12 voxels from the scalp
    hu[:, 10:86, 92:94] = 800.0
    inside = blood_space(hu, (5.0, 0.5, 0.5))
    assert inside[:, 48, 48].all() and inside[:, 48, 22].all()  # brain and skull
    assert not inside[:, 48, 16].any() and not inside[:, 48, 3].any()  # temporalis, the bar
    prob = np.zeros(shape, np.float32)
    prob[:, 40:56, 14:18] = 0.9  # soft tissue beside the skull
    prob[:, 44:52, 44:52] = 0.9  # a bleed
    mask = postprocess(prob, (5.0, 0.5, 0.5), 0.5, PostprocessConfig(intracranial_share=0.5), hu=hu).mask
    assert mask[:, 44:52, 44:52].all() and not mask[:, :, :20].any()


def test_blood_space_is_the_cavity_the_brain_reaches_not_muscle_inside_the_facial_hull():
    """The temporalis between the zygomatic arch and the skull base lies inside the hull, and joins the
    brain only through a thin gap: the cavity leaves it out and keeps the brain of every slice, out to
    the inner table. The hull alone keeps the muscle's finding."""
    from model.anatomy import blood_space, cranial_cavity, skull_hull

    hu, spacing = skull_base_head()
    hull, inside = skull_hull(hu), blood_space(hu, spacing)
    assert hull[:3, 64, 16].all() and not inside[:3, 64, 16].any()  # temporalis: in the hull, not the cavity
    assert inside[:3, 64, 64].all() and inside[3:, 64, 64].all()  # the brain, skull base and above
    assert inside[:3, 64, 93].all() and inside[3:, 64, 103].all()  # against the inner table (r 29, 39)
    prob = np.zeros(hu.shape, np.float32)
    prob[:3, 56:72, 12:26] = 0.9  # the muscle
    prob[1:3, 56:72, 88:94] = 0.9  # a bleed against the inner table at the skull base
    config = PostprocessConfig(intracranial_share=0.5)
    mask = postprocess(prob, spacing, 0.5, config, hu=hu).mask
    assert mask[1:3, 56:72, 88:94].all() and not mask[:, :, :30].any()
    assert postprocess(prob, spacing, 0.5, config, inside=hull).mask[:3, 56:72, 12:26].all()
    assert cranial_cavity(hu[:2], spacing, hull[:2]) is None  # two slices: islands, nothing to follow
    open_skull = np.where(hu > 300, 35.0, hu).astype(np.float32)
    open_skull[:, 60:68] = np.where(hu[:, 60:68] > 300, 1000.0, 35.0)  # no slice closed around the brain
    assert cranial_cavity(open_skull, spacing, skull_hull(open_skull)) is None


def test_fill_holes_fills_each_slice_as_scipy_does_and_never_across_slices():
    from scipy import ndimage

    from model.anatomy import fill_holes

    masks = list(np.random.default_rng(3).random((6, 4, 30, 40)) > 0.45)
    masks.append(np.random.default_rng(4).random((37, 20, 20)) > 0.45)  # over two chunks of slices
    for mask in masks:
        np.testing.assert_array_equal(fill_holes(mask), np.stack([ndimage.binary_fill_holes(s) for s in mask]))
    ring = np.zeros((3, 9, 9), dtype=bool)
    ring[1, 2:7, 2:7] = True
    ring[1, 3:6, 3:6] = False  # a hole, open to the empty slices above and below: each slice is filled alone
    assert fill_holes(ring)[1, 4, 4] and not fill_holes(ring)[[0, 2]].any()


def test_on_bone_below_looks_down_the_slices_as_far_as_seven_and_a_half_mm():
    """Canonical LPS: a lower slice index is lower in the head. Bone in slice 2 is the floor of the
    slices just above it (slice 3 at 5 mm and at 4.4 mm; slices 3–8 at 1.25 mm; 3–5 at 2 mm), never of
    the slices below it."""
    from model.anatomy import on_bone_below

    hu = np.full((12, 8, 8), 30.0, np.float32)
    hu[2, 2:6, 2:6] = 900.0
    for thickness in (5.0, 4.4, 10.0):
        thick = on_bone_below(hu, thickness)
        assert thick[3, 2:6, 2:6].all() and thick.sum() == 16  # the next slice up only, same rows and columns
    thin = on_bone_below(hu, 1.25)
    assert thin[3:9, 2:6, 2:6].all() and thin.sum() == 6 * 16  # 7.5 mm = six 1.25 mm slices
    assert on_bone_below(hu, 2.0).sum() == 3 * 16
    assert not on_bone_below(hu[2:3], 5.0).any()  # one slice: nothing below it


def test_a_component_lying_mostly_on_the_skull_floor_goes_one_above_it_stays():
    """The thick-slice partial volume of a fossa floor (a one-slice component on bone) goes; a bleed
    whose lowest slice of three lies on the same floor (a third of it) stays; off by default."""
    hu = np.full((6, 32, 32), 30.0, np.float32)
    hu[0, 4:28, 4:28] = 900.0  # the floor of the skull under slice 1
    prob = np.zeros(hu.shape, np.float32)
    prob[1, 4:10, 4:10] = 0.9  # partial volume of the floor: one slice, all on bone
    prob[1:4, 16:24, 16:24] = 0.9  # a bleed from the floor up: a third on bone
    spacing = (5.0, 0.5, 0.5)
    config = PostprocessConfig(max_floor_share=0.5)
    cleaned = postprocess(prob, spacing, 0.5, config, hu=hu).mask
    assert not cleaned[:, 4:10, 4:10].any() and cleaned[1:4, 16:24, 16:24].all()
    assert postprocess(prob, spacing, 0.5, PostprocessConfig(), hu=hu).mask[1, 4:10, 4:10].all()  # off
    assert postprocess(prob, spacing, 0.5, replace(config, max_floor_share=0.2), hu=hu).mask.sum() == 0
    with pytest.raises(ValueError, match="max_floor_share"):
        postprocess(prob, spacing, 0.5, config)
