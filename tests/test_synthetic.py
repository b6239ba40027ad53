"""The synthetic data generator: geometry, labels, HU ranges, determinism, subtypes, real-source orientation.

The real sources (Debian invesalius-examples, PyPI pydicom-data, totalsegmentator's brain template) are
required: a missing one fails.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from synthetic import LABEL_FRACTION, generate_case
from synthetic.dataset import LABEL_MAX_HU, LABEL_MIN_HU, NEGATIVE_SHARE
from synthetic.dataset import main as dataset_main
from synthetic.lesions import IRREGULAR, SMALL_ML, SUBTYPES, intraparenchymal, make_lesion
from synthetic.mimics import make_mimics
from synthetic.montage import main as montage_main
from synthetic.sources import (
    MNI_HU,
    MNI_SHRINK,
    SOURCES,
    SourceUnavailable,
    available_sources,
    find_atlas,
    find_mni,
    load_source,
    mni_brain_hu,
)

SMALL = {"size": 128, "max_slices": 14}


def arrays(ct: sitk.Image, label: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    return sitk.GetArrayFromImage(ct), sitk.GetArrayFromImage(label)


def test_geometry_types_and_label_values():
    ct, label, info = generate_case(5, "phantom", n_lesions=2, **SMALL)
    assert ct.GetPixelID() == sitk.sitkInt16 and label.GetPixelID() == sitk.sitkUInt8
    for getter in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(ct, getter)() == getattr(label, getter)()
    assert ct.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert ct.GetSize()[:2] == (128, 128) and 1 <= ct.GetSize()[2] <= 14
    assert 4.4 <= ct.GetSpacing()[2] <= 10.0 + 1e-6
    _, lab = arrays(ct, label)
    assert set(np.unique(lab)) <= {0, 1}
    assert info["label_ml"] == pytest.approx(lab.sum() * np.prod(ct.GetSpacing()) / 1000, rel=1e-3)


def test_label_is_the_inserted_blood():
    """The label lies where blood HU was inserted: blood-dense inside, darker around it."""
    for seed in range(11, 40):  # a bleed of a few mL: small ones at 2 mm pixels are mostly partial volume
        ct, label, info = generate_case(seed, "phantom", n_lesions=1, subtypes=("intraparenchymal",), **SMALL)
        if info["label_ml"] > 2.0:
            break
    img, lab = arrays(ct, label)
    assert lab.sum() > 0 and info["lesions"][0]["volume_ml"] > 0
    inside = img[lab == 1].astype(float)
    assert 40 <= np.median(inside) <= 90
    ring = ndi.binary_dilation(lab, iterations=3) & ~ndi.binary_dilation(lab, iterations=1)
    assert np.median(img[ring]) < np.median(inside) - 8  # blood is denser than what surrounds it
    assert LABEL_FRACTION == 0.5


def test_negative_case_has_empty_label_but_mimics():
    ct, label, info = generate_case(3, "invesalius", n_lesions=0, **SMALL)
    img, lab = arrays(ct, label)
    assert lab.sum() == 0 and info["lesions"] == []
    assert img.max() > 600  # bone is present, bright things exist in a negative


def test_hu_ranges_per_tissue():
    ct, _, _ = generate_case(2, "invesalius", n_lesions=0, **SMALL)
    img = sitk.GetArrayFromImage(ct).astype(float)
    anat = load_source("invesalius")
    brain = anat.hu[anat.intracranial & ~anat.csf & ~anat.ventricles]
    assert 20 <= np.median(brain) <= 45  # grey/white matter
    assert np.median(anat.hu[anat.ventricles]) <= 15  # CSF
    assert np.percentile(img, 1) < -900  # air
    assert img.max() > 1000  # bone
    middle = img[img.shape[0] // 2]
    soft = middle[(middle > -50) & (middle < 100)]
    assert 18 <= np.median(soft) <= 45


def test_deterministic_for_a_seed():
    a = generate_case(21, **SMALL)
    b = generate_case(21, **SMALL)
    assert a[2] == b[2]
    assert np.array_equal(*(sitk.GetArrayFromImage(x[0]) for x in (a, b)))
    assert np.array_equal(*(sitk.GetArrayFromImage(x[1]) for x in (a, b)))
    c = generate_case(22, **SMALL)
    assert c[2] != a[2]


def test_a_fixed_thickness_gives_a_thin_slice_series_of_the_same_case():
    whole_head = {**SMALL, "max_slices": 200}
    _, _, usual = generate_case(21, "invesalius", n_lesions=0, **whole_head)
    ct, _, thin = generate_case(21, "invesalius", n_lesions=0, thickness_mm=1.25, **whole_head)
    assert ct.GetSpacing()[2] == pytest.approx(1.25) and thin["spacing"][2] == 1.25
    assert thin["tilt_deg"] == usual["tilt_deg"] and thin["spacing"][0] == usual["spacing"][0]  # same draws
    z_mm = {info["size"][2] * info["spacing"][2] for info in (usual, thin)}
    assert max(z_mm) - min(z_mm) <= max(usual["spacing"][2], 1.25)  # the same head extent, more slices
    assert thin["noise_sd"] == pytest.approx(2.0 * usual["noise_sd"], abs=0.1)  # sqrt(5 / 1.25), at the cap


@pytest.mark.parametrize("subtype", SUBTYPES)
def test_every_subtype_is_inserted_and_labelled(subtype):
    _ct, label, info = generate_case(7, "phantom", subtypes=(subtype,), **SMALL)
    assert [lesion["subtype"] for lesion in info["lesions"]] == [subtype]
    assert info["lesions"][0]["volume_ml"] > 0 and sitk.GetArrayFromImage(label).sum() > 0


def test_random_subtypes_cover_all_five_over_seeds():
    anat = load_source("phantom")
    kinds = {edits[0].kind for seed in range(40) if (edits := make_lesion(anat, np.random.default_rng(seed)))}
    assert kinds == set(SUBTYPES)


def _internal_air(anat) -> np.ndarray:
    head = np.stack([ndi.binary_fill_holes(s) for s in anat.hu > -300])
    return head & (anat.hu < -500)


def test_invesalius_orientation_by_anatomy():
    anat = load_source("invesalius")
    zs = np.flatnonzero(anat.intracranial.any(axis=(1, 2)))
    mid_z = (zs[0] + zs[-1]) // 2
    # vertex superior: the head ends inside the array above the brain, narrowing on the way up
    head_area = (anat.hu > -300).sum(axis=(1, 2))
    assert head_area[zs[-1]] < 0.6 * head_area[mid_z]
    # skull base inferior: bone in the middle of the section (clivus, petrous bones) low down, brain up high
    spacing = np.asarray(anat.spacing)
    centre = np.argwhere(anat.intracranial)[:, 1:].mean(axis=0)
    yy, xx = np.mgrid[: anat.hu.shape[1], : anat.hu.shape[2]]
    disc = np.hypot((yy - centre[0]) * spacing[1], (xx - centre[1]) * spacing[2]) < 35.0
    extent = zs[-1] - zs[0]
    central_bone = ((anat.hu > 300) & disc).sum(axis=(1, 2))
    assert central_bone[zs[0] + extent // 10: zs[0] + extent * 3 // 10].mean() > 10 * (
        central_bone[zs[0] + extent * 6 // 10: zs[0] + extent * 8 // 10].mean() + 1)
    # face anterior: the air of the sinuses and nasal cavity is in front of the brain (smaller y)
    air = _internal_air(anat)[: mid_z]
    brain_y = np.argwhere(anat.intracranial)[:, 1].mean()
    assert np.argwhere(air)[:, 1].mean() < brain_y - 10
    # eyes anterior: the orbits' soft tissue (fat, HU < -40 inside the head) lies in front, below mid-brain
    fat = np.stack([ndi.binary_fill_holes(s) for s in anat.hu > -300]) & (anat.hu > -150) & (anat.hu < -40)
    assert np.argwhere(fat[zs[0]:mid_z])[:, 1].mean() < brain_y


def test_pydicom_orientation_and_padding():
    anat = load_source("pydicom")
    assert anat.hu.min() >= -1024  # the −3024 padding became air
    head = anat.hu > -300
    real = int(np.argmax(head.sum(axis=(1, 2))))  # the widest level is the real slice
    components, _count = ndi.label(head[real])
    largest = np.argmax(np.bincount(components.ravel())[1:]) + 1
    centre_y = np.argwhere(components == largest)[:, 0].mean()
    # the head holder (thin bright arc apart from the head) is behind the head of a supine patient
    holder = np.argwhere((components > 0) & (components != largest) & (anat.hu[real] > 100))
    assert len(holder) > 100 and holder[:, 0].mean() > centre_y + 50
    # the section narrows toward the vertex (superior = higher z)
    area = head.sum(axis=(1, 2))
    assert area[-1] < area[len(area) // 3]


def test_cli_irregular_and_fine_warp_are_recorded_per_case(tmp_path):
    assert dataset_main(["--out", str(tmp_path), "--train", "1", "--seed", "2", "--sources", "phantom", "--size", "96",
                         "--max-slices", "8", "--lesions", "1", "--irregular", "--fine-warp", "2.5"]) == 0
    row, = json.loads((tmp_path / "cases.json").read_text())
    assert row["irregular"] is True and row["fine_warp_mm"] == 2.5


def test_fine_warp_reshapes_the_head_by_millimetres_only():
    """The local warp moves the anatomy (another head shape from the same source), but only by a few
    millimetres: the head outline of the same case with and without it overlaps closely."""
    heads = [arrays(*generate_case(8, "phantom", n_lesions=0, fine_warp_mm=w, **SMALL)[:2])[0] > -300
             for w in (0.0, 4.0)]
    overlap = 2 * (heads[0] & heads[1]).sum() / (heads[0].sum() + heads[1].sum())
    assert 0.9 < overlap < 0.995, overlap


def test_real_sources_produce_cases_with_face_anterior():
    ct, _, _info = generate_case(4, "invesalius", n_lesions=0, **SMALL)
    img = sitk.GetArrayFromImage(ct)
    head = np.stack([ndi.binary_fill_holes(s) for s in img > -300])
    air = head & (img < -500)
    low = air[: img.shape[0] // 3]
    assert np.argwhere(low)[:, 1].mean() < np.argwhere(head)[:, 1].mean()
    ct, label, _ = generate_case(4, "pydicom", n_lesions=1, **SMALL)
    assert ct.GetSize() == label.GetSize()


def test_cli_writes_instance_layout_and_montage(tmp_path):
    out = tmp_path / "ds"
    assert dataset_main(["--out", str(out), "--train", "2", "--eval", "1", "--seed", "1", "--sources", "phantom",
                         "--size", "96", "--max-slices", "8"]) == 0
    names = sorted(p.name for p in (out / "train" / "data").iterdir())
    assert names == ["001.nii.gz", "002.nii.gz"]
    assert sorted(p.name for p in (out / "train" / "label").iterdir()) == names
    assert [p.name for p in (out / "evaluation" / "data").iterdir()] == ["003.nii.gz"]
    assert (out / "evaluation" / "label" / "003.nii.gz").is_file()
    record = json.loads((out / "cases.json").read_text())  # what each case holds, for reports by subtype
    assert [(r["case"], r["subset"]) for r in record] == [("001", "train"), ("002", "train"), ("003", "evaluation")]
    for row in record:
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(out / row["subset"] / "label" / f"{row['case']}.nii.gz")))
        assert (label.sum() > 0) == (row["label_ml"] > 0)
        assert {lesion["subtype"] for lesion in row["lesions"]} <= set(SUBTYPES)
        assert row["irregular"] is False
    png = tmp_path / "m.png"
    assert montage_main([str(out), "--out", str(png), "--cases", "3"]) == 0
    assert png.stat().st_size > 1000


def test_no_label_voxel_reads_as_bone_or_calcification():
    """A voxel half blood, half bone (a thin bleed against the skull in a thick slice) reads as bone:
    labelling such voxels taught the model to paint the inner table. Over bleeds of every subtype
    against the skull, no labelled voxel's noise-free value is above LABEL_MAX_HU."""
    for seed, subtype in enumerate(("subdural", "epidural", "subarachnoid")):
        ct, label, _ = generate_case(30 + seed, "invesalius", subtypes=(subtype,), **SMALL)
        img, lab = arrays(ct, label)
        if lab.any():  # noise (SD ≤ 8 HU) and the offset come on top of the noise-free value
            assert np.percentile(img[lab > 0], 99) <= LABEL_MAX_HU + 30
    assert LABEL_MAX_HU < 120


def test_no_label_voxel_reads_as_brain_or_csf():
    """Blood diluted by CSF in a thick slab (subarachnoid, intraventricular) reads as brain or darker:
    such voxels were labelled, no model could see them, and an expert would not draw them. Every
    labelled voxel's noise-free value is at least LABEL_MIN_HU, above brain, so with noise (SD ≤ 8 HU,
    correlated) and offset (SD 3 HU) on top few read 10 HU below it (without the rule: 5.4 %)."""
    values = []
    for seed in range(40, 46):
        for subtype in ("subarachnoid", "intraventricular"):
            img, lab = arrays(*generate_case(seed, "invesalius", subtypes=(subtype,), **SMALL)[:2])
            values.append(img[lab > 0])
    values = np.concatenate(values)
    assert values.size > 100 and (values < LABEL_MIN_HU - 10).mean() < 0.02
    assert 35 <= LABEL_MIN_HU <= 45


def test_bleed_sizes_reach_down_to_0_05_ml_and_many_are_small():
    anat = load_source("phantom")
    volumes = []
    for seed in range(60):
        rng = np.random.default_rng(seed)
        edits = make_lesion(anat, rng)
        if edits:
            volumes.append(float((edits[0].fraction >= 0.5).sum()) * anat.voxel_ml)
    volumes = np.array(volumes)
    assert (volumes < 2.0).mean() >= 0.3 and volumes.min() < 0.3 and volumes.max() > 20.0
    assert SMALL_ML[0] == 0.05


def test_dural_sheets_are_a_mimic_at_blood_density_never_labelled():
    anat = load_source("phantom")
    mimics = [e for seed in range(12) for e in make_mimics(anat, np.random.default_rng(seed))]
    sheets = [e for e in mimics if e.kind == "dural_sheet"]
    assert sheets and all(not e.blood and 50 <= e.hu <= 75 for e in sheets)
    assert all(e.fraction.max() <= 1.0 and e.fraction.sum() > 0 for e in sheets)


def test_a_quarter_of_cases_hold_no_blood():
    assert NEGATIVE_SHARE >= 0.2
    empty = sum(generate_case(100 + seed, "phantom", **SMALL)[2]["label_ml"] == 0 for seed in range(16))
    assert 1 <= empty <= 9


@pytest.mark.parametrize(("source", "voxel_mm"), [("atlas", 1.0), ("mni", MNI_SHRINK)])
def test_template_brain_gets_csf_skull_and_scalp_around_it(source, voxel_mm):
    """Each template is a skull-stripped brain: outward from it, along each axis in-plane, come brain or
    CSF, cortical bone, then scalp, then air; nothing below the brain is intracranial."""
    anat = load_source(source)
    assert anat.spacing == (voxel_mm,) * 3
    assert 1100 <= anat.intracranial.sum() * anat.voxel_ml <= 1700  # an adult's cranial cavity, mL
    assert anat.ventricles.sum() > 0 and anat.csf.sum() > 0
    rows = np.flatnonzero(anat.intracranial.any(axis=(1, 2)))
    z = (rows[0] + rows[-1]) // 2
    cy, cx = (round(c) for c in ndi.center_of_mass(anat.intracranial[z]))
    for ray in (anat.hu[z, cy, cx:], anat.hu[z, cy, :cx][::-1], anat.hu[z, cy:, cx], anat.hu[z, :cy, cx][::-1]):
        edge = int(np.flatnonzero(ray > 300)[0])  # the inner table
        assert np.median(ray[edge - 12: edge - 4]) < 60  # brain before it, no bone
        assert ray[edge: edge + 10].max() > 1000  # cortical bone
        outside = ray[edge:]
        soft = int(np.flatnonzero(outside < 200)[0])
        assert -150 < np.median(outside[soft: soft + 3]) < 80  # scalp
        assert outside[-1] < -900  # air
    assert not anat.intracranial[: rows[0]].any() and rows[0] > 10  # the cord below is no intracranial space


@pytest.mark.parametrize("source", ["atlas", "mni"])
def test_template_orientation_by_anatomy(source):
    """Canonical LPS like every source: the posterior fossa (cerebellum) is the brain's back and bottom,
    the section narrows toward the vertex, and the midline lies near the volume's centre."""
    anat = load_source(source)
    brain = anat.intracranial
    rows = np.flatnonzero(brain.any(axis=(1, 2)))
    y_all = np.argwhere(brain)[:, 1].mean()
    low = brain[rows[0]: rows[0] + (rows[-1] - rows[0]) // 5]
    assert np.argwhere(low)[:, 1].mean() > y_all + 10  # posterior fossa is behind the brain's centre
    area = brain.sum(axis=(1, 2))
    assert area[rows[-1] - 5] < 0.5 * area.max()
    assert abs(anat.midline_x - brain.shape[2] / 2) < 15


@pytest.mark.parametrize(("source", "locate", "file_name"), [
    ("atlas", lambda: find_atlas(), "ct_brain_atlas_1mm.nii.gz"),
    ("mni", lambda: find_mni()["gm"], "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz")])
def test_templates_are_chosen_by_name_only(source, locate, file_name):
    """Not in the default mix (every documented seed gives the cases it gave), but usable by name."""
    assert source not in SOURCES and source not in available_sources(report=lambda _: None)
    assert available_sources((source,)) == (source,)
    ct, label, info = generate_case(6, source, n_lesions=1, subtypes=("intraparenchymal",), **SMALL)
    assert info["source"] == source and ct.GetSize() == label.GetSize() and info["label_ml"] > 0
    assert locate().name == file_name


def test_mni_brain_has_ct_densities():
    """The tissue maps become CT densities: cortex brighter than the deep white matter, ventricular
    CSF near water, and the brain's median within the range of real non-contrast head CT."""
    anat = load_source("mni")
    brain = anat.intracranial & (anat.inner_dist > 3)
    assert 24 < np.median(anat.hu[brain]) < 38
    assert np.median(anat.hu[anat.ventricles]) < 15
    deep = anat.intracranial & (anat.inner_dist > 25) & ~ndi.binary_dilation(anat.ventricles, iterations=3)
    cortex = anat.intracranial & (anat.inner_dist > 2) & (anat.inner_dist < 4)
    assert np.percentile(anat.hu[cortex], 75) > np.percentile(anat.hu[deep], 25) + 5


def test_mni_brain_from_tissue_maps():
    """A sphere of white matter in a shell of grey matter around a ventricle: the ventricle and a
    sulcus narrower than the closing are inside, each voxel at its tissues' density, air outside."""
    zz, yy, xx = np.ogrid[-30:31, -30:31, -30:31]
    r = np.sqrt(zz ** 2 + yy ** 2 + xx ** 2)
    white = ((r >= 6) & (r < 18)).astype(np.float32)
    grey = ((r >= 18) & (r < 24)).astype(np.float32)
    grey[(np.abs(xx) <= 1) & (r >= 20)] = 0  # a sulcus 3 voxels wide, open to the surface
    hu = mni_brain_hu(grey, white)
    assert hu[30, 30, 30] == MNI_HU["csf"]  # the enclosed ventricle
    assert hu[30, 30 + 12, 30] == MNI_HU["wm"] and hu[30, 30, 30 + 21] == MNI_HU["gm"]
    assert hu[30, 30 + 22, 30] == MNI_HU["csf"]  # the sulcus, closed over
    assert hu[30, 30 + 27, 30] == 0 and hu[0, 0, 0] == 0


def test_a_missing_mni_template_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("ICH_MNI", str(tmp_path))
    with pytest.raises(SourceUnavailable, match=r"^mni: .*/mni_icbm152_gm_tal_nlin_sym_09a_\w+\.nii\.gz is missing$"):
        find_mni()


def test_a_missing_atlas_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("ICH_ATLAS", str(tmp_path / "none.nii.gz"))
    with pytest.raises(SourceUnavailable, match=r"^atlas: ICH_ATLAS=.*none\.nii\.gz is not a file$"):
        find_atlas()
    lines = []
    assert available_sources(("phantom", "atlas"), report=lines.append) == ("phantom",)
    assert len(lines) == 1 and "atlas" in lines[0]


def _solidity(occupied: np.ndarray) -> float:
    """Occupied voxels over the voxels whose centres lie in the convex hull of theirs (1 for a convex
    shape; a lobulated outline has bays, satellites lie apart)."""
    from scipy.spatial import Delaunay
    hull = Delaunay(np.argwhere(occupied), qhull_options="QJ")
    grid = np.argwhere(np.ones_like(occupied))
    return float(occupied.sum()) / float((hull.find_simplex(grid) >= 0).sum())


def test_irregular_bleeds_are_lobulated_and_keep_their_sizes():
    """``irregular``: a 3 mL intraparenchymal bleed has bays and satellites (lower solidity) and about the
    smooth one's volume; subtypes without an irregular shape draw the very same edit."""
    anat = load_source("phantom")
    solidity, volumes, pieces = {}, {}, 0
    for name, maker in (("smooth", intraparenchymal), ("irregular", IRREGULAR["intraparenchymal"])):
        occupied = [maker(anat, np.random.default_rng(seed), 3.0)[0].fraction >= 0.5 for seed in range(16)]
        solidity[name] = np.median([_solidity(o) for o in occupied])
        volumes[name] = np.median([o.sum() * anat.voxel_ml for o in occupied])
        pieces += sum(ndi.label(o, np.ones((3, 3, 3)))[1] > 1 for o in occupied) if name == "irregular" else 0
    assert solidity["irregular"] < 0.8 < solidity["smooth"], solidity  # measured 0.55 and 0.97
    assert pieces >= 2
    assert 0.7 < volumes["irregular"] / volumes["smooth"] < 1.4, volumes  # measured 3.44 and 3.40 mL
    for subtype in ("subarachnoid", "intraventricular"):
        plain, same = (make_lesion(anat, np.random.default_rng(3), subtype, irregular) for irregular in (False, True))
        assert np.array_equal(plain[0].fraction, same[0].fraction)
