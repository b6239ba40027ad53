"""The anatomy sources, each turned into one :class:`Anatomy` in canonical LPS order.

An anatomy is a head CT volume in Hounsfield units, array (z, y, x) with z inferior→superior,
y anterior→posterior and x right→left, plus the masks that lesions and mimics are placed with
(intracranial space, ventricles, CSF spaces, distance to the skull's inner table). The real
sources get their masks from HU thresholds and morphology; the phantom knows its masks exactly.

Sources:
- ``invesalius``: Debian ``invesalius-examples``, ``Cranium.inv3`` (a real adult head, direct
  coronal acquisition, ~16 cm front to back).
- ``pydicom``: PyPI ``pydicom-data``, ``693_UNCR.dcm`` — ONE real axial slice, extruded to a volume
  (the head section shrinks toward the vertex and the skull base, the ventricles close away from the
  slice). It is real texture, not real 3D anatomy.
- ``phantom``: the analytic head of :mod:`synthetic.phantom`; needs no package.
- ``atlas``: PyPI ``totalsegmentator``, ``resources/ct_brain_atlas_1mm.nii.gz``, a skull-stripped CT
  template of a real brain (an average of many heads: real 3D shape, ventricles, basal ganglia and
  grey/white contrast, smoothed texture), inside a skull, scalp and neck made here. Not in the default
  mix (:data:`SOURCES`): no shipped model has seen it, so a set made from it alone measures a model on
  a brain it never saw (``python -m synthetic --sources atlas``).
- ``mni``: PyPI ``nilearn``, the grey- and white-matter maps of the MNI ICBM152 2009a template
  (``datasets/data/``, 1 mm), turned into a CT brain (CSF, grey and white matter at their CT
  densities) and wrapped like the atlas. A second real brain shape, averaged from other heads than the
  atlas's, with an MR template's sharp cortex instead of CT texture. Chosen by name, like the atlas.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import plistlib
import subprocess
import tarfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage as ndi

from model.spacing import voxel_ml

if TYPE_CHECKING:
    import SimpleITK as sitk

SOURCES = ("invesalius", "pydicom", "phantom")  # the default mix, which every shipped model trained on
EXTRA_SOURCES = ("atlas", "mni")  # chosen by name only, so that every documented seed still gives its cases
ATLAS_FILE = Path("resources") / "ct_brain_atlas_1mm.nii.gz"
INVESALIUS_GLOB = "Cranium.inv3"
PYDICOM_FILE = Path("data") / "693_UNCR.dcm"
MNI_FILES = {tissue: Path("datasets") / "data" / f"mni_icbm152_{tissue}_tal_nlin_sym_09a_converted.nii.gz"
             for tissue in ("gm", "wm")}


class SourceUnavailable(RuntimeError):
    """A real anatomy source whose package is not installed; the message is one line."""


@dataclass
class Anatomy:
    """A head CT in canonical LPS order with the masks lesions are placed with."""

    name: str
    hu: np.ndarray  # float32 (z, y, x)
    spacing: tuple[float, float, float]  # (z, y, x) mm
    intracranial: np.ndarray  # bool: brain + CSF inside the skull
    ventricles: np.ndarray  # bool
    csf: np.ndarray  # bool: sulci, fissures and cisterns (extra-axial CSF)
    inner_dist: np.ndarray  # float32 mm from the inner table (0 outside the intracranial space)
    midline_x: float  # mm, x of the falx
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # exact masks the phantom provides

    @property
    def voxel_ml(self) -> float:
        return voxel_ml(self.spacing)

    def candidates(self, mask_name: str) -> np.ndarray:
        """Flat indices of a mask's voxels, cached (placing a lesion samples from them)."""
        cache_ = self.extras.setdefault("_candidates", {})
        if mask_name not in cache_:
            cache_[mask_name] = np.flatnonzero(getattr(self, mask_name) if hasattr(self, mask_name)
                                               else self.extras[mask_name])
        return cache_[mask_name]


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndi.label(mask)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _ball(radius_mm: float, spacing: tuple[float, float, float]) -> np.ndarray:
    r = [max(1, round(radius_mm / s)) for s in spacing]
    zz, yy, xx = np.ogrid[-r[0]:r[0] + 1, -r[1]:r[1] + 1, -r[2]:r[2] + 1]
    return (zz * spacing[0]) ** 2 + (yy * spacing[1]) ** 2 + (xx * spacing[2]) ** 2 <= radius_mm ** 2


COARSE_MM = 2.0  # grid of the slow morphology (closing, hole filling, distance transform)


def _fill_enclosed(bone: np.ndarray, walls_y: tuple[int, ...] = ()) -> np.ndarray:
    """Space enclosed by bone in axial, coronal or sagittal sections (the skull base closes in some only).

    ``walls_y`` are coronal planes where the scan was cut (InVesalius misses the front of the face): they
    count as closed so that the sections through the cut still enclose the brain.
    """
    walled = bone.copy()
    walled[:, list(walls_y), :] = True
    enclosed = np.zeros_like(bone)
    for axis in range(3):
        moved = np.moveaxis(walled, axis, 0)
        np.moveaxis(enclosed, axis, 0)[...] |= np.stack([ndi.binary_fill_holes(sl) for sl in moved])
    return enclosed & ~bone


def derive_masks(name: str, hu: np.ndarray, spacing: tuple[float, float, float],
                 midline_band_mm: float = 32.0, walls_y: tuple[int, ...] = ()) -> Anatomy:
    """Masks of a real CT by thresholds and morphology (scipy.ndimage), in the canonical frame.

    The intracranial space is the soft tissue that the skull encloses; the ventricles are the
    CSF-dense regions deep inside it near the midline; the remaining CSF-dense intracranial voxels are
    the sulci and cisterns that subarachnoid blood follows. Morphology runs on a ~2 mm grid (seconds
    instead of a minute) and is brought back to full resolution, where the thresholds are applied.
    """
    smooth = ndi.gaussian_filter(hu, sigma=[0.8 / s for s in spacing])
    step = tuple(max(1, round(COARSE_MM / s)) for s in spacing)
    coarse_spacing = tuple(s * k for s, k in zip(spacing, step, strict=True))
    coarse = smooth[:: step[0], :: step[1], :: step[2]]
    bone = ndi.binary_closing(coarse > 250, structure=_ball(4.0, coarse_spacing))
    walls = tuple(min(w // step[1], coarse.shape[1] - 1) for w in walls_y)
    sealed = ndi.binary_closing(bone, structure=_ball(10.0, coarse_spacing))  # bridges sutures and sinus openings
    soft = _fill_enclosed(sealed, walls) & ~ndi.binary_dilation(bone) & (coarse > -15) & (coarse < 95)
    inside = _largest_component(ndi.binary_opening(soft, structure=_ball(4.0, coarse_spacing)))
    inside = ndi.binary_dilation(inside, structure=_ball(2.0, coarse_spacing)) & ~bone
    zoom = [n / c for n, c in zip(hu.shape, coarse.shape, strict=True)]
    up = ndi.zoom(inside.astype(np.float32), zoom, order=1, grid_mode=True, mode="nearest") > 0.5
    intracranial = up & (smooth > -15) & (smooth < 100)
    dist = ndi.distance_transform_edt(inside, sampling=coarse_spacing).astype(np.float32)
    inner_dist = np.where(intracranial, ndi.zoom(dist, zoom, order=1, grid_mode=True, mode="nearest"), 0.0)
    x_mm = np.arange(hu.shape[2]) * spacing[2]
    midline_x = float((intracranial.sum(axis=(0, 1)) * x_mm).sum() / max(intracranial.sum(), 1))
    fluid = intracranial & (smooth < 15)
    deep = fluid & (inner_dist > 14.0) & (np.abs(x_mm - midline_x) < midline_band_mm)[None, None, :]
    labels, count = ndi.label(ndi.binary_opening(deep))
    ventricles = np.zeros_like(deep)
    if count:
        sizes = np.bincount(labels.ravel())[1:] * voxel_ml(spacing)
        ventricles = ndi.binary_dilation(np.isin(labels, np.flatnonzero(sizes > 0.4) + 1)) & fluid
    csf = fluid & ~ndi.binary_dilation(ventricles, iterations=2)
    return Anatomy(name, hu.astype(np.float32), spacing, intracranial, ventricles, csf,
                   inner_dist.astype(np.float32), midline_x)


def _named_file(variable: str, source: str) -> Path | None:
    """The file an environment variable names for a source (a machine without its package), if set."""
    named = os.environ.get(variable)
    if not named:
        return None
    if not Path(named).is_file():
        raise SourceUnavailable(f"{source}: {variable}={named} is not a file")
    return Path(named)


def find_invesalius() -> Path:
    """``Cranium.inv3`` from the installed ``invesalius-examples`` package (via dpkg, no fixed path), or the
    file ``$ICH_INVESALIUS`` names (a machine without Debian's packages, e.g. a lent GPU machine)."""
    override = _named_file("ICH_INVESALIUS", "invesalius")
    if override:
        return override
    try:
        listing = subprocess.run(["dpkg", "-L", "invesalius-examples"], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise SourceUnavailable("invesalius: dpkg not found, cannot locate invesalius-examples") from None
    paths = [Path(line) for line in listing.stdout.splitlines() if line.endswith(INVESALIUS_GLOB)]
    existing = [p for p in paths if p.is_file()]
    if not existing:
        raise SourceUnavailable("invesalius: Debian package invesalius-examples is not installed "
                                "(apt-get install invesalius-examples)")
    return existing[0]


def read_inv3(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The CT matrix of an InVesalius project and its (z, y, x) spacing as stored (plist-driven)."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            plist = plistlib.loads(tar.extractfile(members["main.plist"]).read())
            matrix = plist["matrix"]
            raw = tar.extractfile(members[matrix["filename"]]).read()
    except (OSError, KeyError, tarfile.TarError, gzip.BadGzipFile, plistlib.InvalidFileException) as err:
        raise SourceUnavailable(f"{path.name}: not a readable InVesalius project ({err})") from None
    shape = tuple(int(n) for n in matrix["shape"])
    array = np.frombuffer(raw, dtype=np.dtype(matrix["dtype"]).newbyteorder("<")).reshape(shape)
    sx, sy, sz = (float(s) for s in plist["spacing"])  # VTK order (x, y, z); the array is (z, y, x)
    return array, (sz, sy, sx)


def invesalius_canonical(stored: np.ndarray, spacing: tuple[float, float, float]) -> tuple[np.ndarray, tuple]:
    """Stored coronal stack → canonical LPS (z inferior→superior, y anterior→posterior, x right→left).

    Established by anatomy (and tested): stored slice index runs anterior→posterior (face first),
    stored rows run superior→inferior (vertex at row 0), columns are kept as x (radiological storage,
    patient's left at higher column). So canonical = rows reversed as z, slices as y.
    """
    canonical = np.ascontiguousarray(np.transpose(stored, (1, 0, 2))[::-1])
    return canonical, (spacing[1], spacing[0], spacing[2])


@cache
def load_invesalius() -> Anatomy:
    stored, spacing = read_inv3(find_invesalius())
    hu, spacing = invesalius_canonical(stored.astype(np.float32), spacing)
    # The scan covers ~16 cm front to back (face cut in front): pad with air to a full axial field of view.
    pad = round(40.0 / spacing[1])
    hu = np.pad(hu, ((0, 0), (pad, pad), (0, 0)), constant_values=-1024.0)
    return derive_masks("invesalius", hu, spacing, walls_y=(pad, hu.shape[1] - pad - 1))


def find_pydicom_slice() -> Path:
    spec = importlib.util.find_spec("data_store")
    if spec is None or not spec.submodule_search_locations:
        raise SourceUnavailable("pydicom: PyPI package pydicom-data is not installed (pip install pydicom-data==1.0.0)")
    path = Path(next(iter(spec.submodule_search_locations))) / PYDICOM_FILE
    if not path.is_file():
        raise SourceUnavailable(f"pydicom: {PYDICOM_FILE} missing from the installed pydicom-data")
    if importlib.util.find_spec("pydicom") is None:
        raise SourceUnavailable("pydicom: PyPI package pydicom is not installed")
    return path


def read_axial_slice(path: Path) -> tuple[np.ndarray, float]:
    """The slice in HU as (y anterior→posterior, x right→left), padding (−3024) turned into air."""
    import pydicom

    ds = pydicom.dcmread(path)
    orientation = [round(float(v)) for v in ds.ImageOrientationPatient]
    if orientation != [1, 0, 0, 0, 1, 0]:
        raise SourceUnavailable(f"{path.name}: expected an axial slice with identity orientation, got {orientation}")
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return np.maximum(hu, -1024.0), float(ds.PixelSpacing[0])


Z_STEP_MM = 2.0
ABOVE_MM, BELOW_MM = 76.0, 44.0  # vertex and lowest extruded level relative to the real slice


def extrude_slice(hu2d: np.ndarray, pixel: float) -> tuple[np.ndarray, tuple[float, float, float]]:
    """One real axial slice → a plausible volume.

    Each level is the real slice scaled about the head's centre by an ellipsoidal profile (the head
    narrows toward the vertex, less toward the skull base) and the ventricles close gradually away
    from the real level (filled with nearby white-matter values). Honest limit: it is one slice.
    """
    head = _largest_component(ndi.binary_fill_holes(hu2d > -300))
    cy, cx = ndi.center_of_mass(head)
    smooth = ndi.gaussian_filter(hu2d, 2.0)
    wm_fill = ndi.median_filter(np.where((smooth > 18) & (smooth < 40), hu2d, 28.0), size=9)
    brain = ndi.binary_erosion(ndi.binary_fill_holes(hu2d > 300) & (hu2d < 100), iterations=int(15 / pixel))
    vent2d = brain & (smooth < 14)
    vent_depth = ndi.distance_transform_edt(vent2d) * pixel
    levels = np.arange(-BELOW_MM, ABOVE_MM + 1e-6, Z_STEP_MM)
    out = np.empty((len(levels), *hu2d.shape), np.float32)
    for i, dz in enumerate(levels):
        radius = ABOVE_MM + 12.0 if dz > 0 else BELOW_MM * 2.2
        scale = max(float(np.sqrt(max(1.0 - (dz / radius) ** 2, 0.0))), 0.3)
        closing = np.clip((abs(dz) - 8.0) / 22.0, 0.0, 1.0) * 12.0  # mm of ventricle filled in
        base = np.where(vent2d & (vent_depth <= closing + 1e-3) if closing > 0 else False, wm_fill, hu2d)
        matrix = np.diag([1.0 / scale, 1.0 / scale])
        offset = np.array([cy, cx]) - matrix @ np.array([cy, cx])
        out[i] = ndi.affine_transform(base, matrix, offset=offset, order=1, cval=-1024.0)
    return out, (Z_STEP_MM, pixel, pixel)


@cache
def load_pydicom() -> Anatomy:
    hu2d, pixel = read_axial_slice(find_pydicom_slice())
    hu, spacing = extrude_slice(hu2d, pixel)
    return derive_masks("pydicom", hu, spacing, midline_band_mm=20.0)


@cache
def load_phantom(variant: int = 0) -> Anatomy:
    from synthetic.phantom import build_phantom

    return build_phantom(variant)


def _installed_package(package: str, source: str, version: str) -> Path:
    """The folder of an installed package whose data files a source reads, found without importing it
    (neither package's own dependencies are installed)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SourceUnavailable(f"{source}: PyPI package {package} is not installed "
                                f"(pip install --no-deps {package}=={version})")
    return Path(next(iter(spec.submodule_search_locations)))


def find_atlas() -> Path:
    """The brain template of the installed ``totalsegmentator`` (located without importing it: only the
    file is used), or the file ``$ICH_ATLAS`` names."""
    override = _named_file("ICH_ATLAS", "atlas")
    if override:
        return override
    path = _installed_package("totalsegmentator", "atlas", "2.18.0") / ATLAS_FILE
    if not path.is_file():
        raise SourceUnavailable(f"atlas: {ATLAS_FILE} missing from the installed totalsegmentator")
    return path


ATLAS_PAD_MM = (20, 28, 28)  # (z below, y, x) room around the brain for skull, scalp and neck
ATLAS_ABOVE_MM = 18


def atlas_head(brain_hu: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """A whole head around a skull-stripped 1 mm brain (z inferior→superior; 0 outside the brain).

    Extra-axial CSF 1–2.5 mm, a skull 5–9 mm thick (cortical tables, diploë), scalp 4–7 mm with fat,
    the brainstem continued down through the foramen magnum, and neck and skull-base soft tissue below
    the brain, so that the lowest slices show bone and soft tissue as a real scan's do. Smooth random
    fields vary the thicknesses; fine texture is added (the template is an average, smoother than a
    single head; the generator's scanner noise comes on top). Also returns the row where the brain
    (not the cord carried down) begins.
    """
    pad = ((ATLAS_PAD_MM[0], ATLAS_ABOVE_MM), (ATLAS_PAD_MM[1],) * 2, (ATLAS_PAD_MM[2],) * 2)
    brain_hu = np.pad(brain_hu.astype(np.float32), pad)
    brain = ndi.binary_fill_holes(brain_hu != 0)
    brain = _largest_component(brain)
    rows = np.flatnonzero(brain.any(axis=(1, 2)))
    start = int(rows[0]) + 2  # the brain proper from here; its lowest rows are the medulla's tip
    stem = brain[start]  # the medulla's section, carried down as the cord
    brain[:start] |= stem[None]
    brain_hu[:start][:, stem] = brain_hu[start][stem].mean()

    def smooth_field(sigma: float) -> np.ndarray:  # unit SD
        smooth = ndi.gaussian_filter(rng.standard_normal(brain.shape).astype(np.float32), sigma)
        return smooth / smooth.std()

    csf_mm = 1.75 + 0.75 * np.tanh(smooth_field(8.0))
    skull_mm = csf_mm + 7.0 + 2.0 * np.tanh(smooth_field(10.0))
    scalp_mm = skull_mm + 5.5 + 1.5 * np.tanh(smooth_field(10.0))
    dist = ndi.distance_transform_edt(~brain).astype(np.float32)
    below = np.zeros(brain.shape, bool)
    below[:start] = True
    cord = np.zeros(brain.shape, bool)
    cord[:start] = ndi.binary_dilation(stem, iterations=4)[None]  # the foramen magnum stays open
    hu = np.full(brain.shape, -1000.0, np.float32)
    neck = (dist <= scalp_mm + 8.0) & below  # skull-base soft tissue and neck muscles under the brain
    hu[neck] = 40.0 + 6.0 * smooth_field(3.0)[neck]
    scalp = (dist > skull_mm) & (dist <= scalp_mm)
    hu[scalp] = 35.0 + 6.0 * smooth_field(3.0)[scalp]
    hu[(scalp | neck) & (smooth_field(2.0) > 1.6)] = -90.0  # fat
    bone = (dist > csf_mm) & (dist <= skull_mm) & ~cord
    table = np.abs(dist - (csf_mm + skull_mm) / 2) > (skull_mm - csf_mm) * 0.25
    hu[bone] = np.where(table[bone], 1400.0 + 250.0 * smooth_field(3.0)[bone], 600.0 + 120.0 * smooth_field(3.0)[bone])
    csf = ((dist > 0) & (dist <= csf_mm)) | cord & (dist > 0) & (dist <= csf_mm + 2)
    hu[csf] = 8.0 + 2.0 * smooth_field(2.0)[csf]
    hu[brain] = brain_hu[brain] + 1.5 * rng.standard_normal(int(brain.sum())).astype(np.float32)
    return hu, start


def _wrapped_brain(name: str, brain_hu: np.ndarray, spacing: tuple[float, float, float], seed: int) -> Anatomy:
    """The anatomy of a skull-stripped brain (z inferior→superior) inside the head :func:`atlas_head` makes."""
    hu, brain_from = atlas_head(brain_hu, np.random.default_rng(seed))
    anatomy = derive_masks(name, hu, spacing)
    for mask in (anatomy.intracranial, anatomy.ventricles, anatomy.csf, anatomy.inner_dist):
        mask[:brain_from] = 0  # the cord below the foramen magnum: no intracranial bleed goes there
    return anatomy


def _read_lps(path: Path, source: str) -> sitk.Image:
    import SimpleITK as sitk

    try:
        return sitk.DICOMOrient(sitk.ReadImage(str(path)), "LPS")
    except RuntimeError as err:
        raise SourceUnavailable(f"{source}: {path.name} is not a readable image ({str(err).splitlines()[0]})") from None


@cache
def load_atlas() -> Anatomy:
    import SimpleITK as sitk

    image = _read_lps(find_atlas(), "atlas")
    spacing = tuple(float(s) for s in reversed(image.GetSpacing()))
    return _wrapped_brain("atlas", sitk.GetArrayFromImage(image), spacing, 2029)


def find_mni() -> dict[str, Path]:
    """The MNI template's grey- and white-matter maps in the installed ``nilearn`` (located without
    importing it), or, on a machine without it, in the folder ``$ICH_MNI`` names."""
    named = os.environ.get("ICH_MNI")
    if named:
        folder = Path(named)
        files = {tissue: folder / path.name for tissue, path in MNI_FILES.items()}
    else:
        root = _installed_package("nilearn", "mni", "0.14.1")
        files = {tissue: root / path for tissue, path in MNI_FILES.items()}
    missing = [path for path in files.values() if not path.is_file()]
    if missing:
        raise SourceUnavailable(f"mni: {missing[0]} is missing")
    return files


MNI_HU = {"csf": 6.0, "gm": 37.0, "wm": 28.0}  # non-contrast CT densities of the three tissues
MNI_SHRINK = 0.92  # the template's intracranial space is 1,820 mL at 1 mm; × 0.92³ ≈ 1,420 mL, an adult's


def mni_brain_hu(grey: np.ndarray, white: np.ndarray) -> np.ndarray:
    """A skull-stripped CT brain from tissue probability maps (0–1; 0 outside the intracranial space).

    The intracranial space is the tissue (grey + white > 0.5) closed over its sulci (3 mm) with the
    ventricles and cisterns it encloses in any of the three section planes filled in; each voxel's
    density is its tissues' densities weighted by their probabilities, the rest CSF.
    """
    tissue = grey + white
    closed = ndi.binary_closing(tissue > 0.5, structure=_ball(3.0, (1.0, 1.0, 1.0)))
    inside = _largest_component(closed | _fill_enclosed(closed))
    csf = np.clip(1.0 - tissue, 0.0, 1.0)
    hu = MNI_HU["csf"] * csf + MNI_HU["gm"] * grey + MNI_HU["wm"] * white
    return np.where(inside, hu, 0.0).astype(np.float32)


@cache
def load_mni() -> Anatomy:
    import SimpleITK as sitk

    images = {tissue: _read_lps(path, "mni") for tissue, path in find_mni().items()}
    maps = {tissue: sitk.GetArrayFromImage(image).astype(np.float32) / 255.0 for tissue, image in images.items()}
    spacing = tuple(float(s) * MNI_SHRINK for s in reversed(images["gm"].GetSpacing()))
    return _wrapped_brain("mni", mni_brain_hu(maps["gm"], maps["wm"]), spacing, 2031)


def load_source(name: str, variant: int = 0) -> Anatomy:
    """The anatomy of one source (cached per process); raises SourceUnavailable if its package is absent."""
    if name == "invesalius":
        return load_invesalius()
    if name == "pydicom":
        return load_pydicom()
    if name == "phantom":
        return load_phantom(variant)
    if name == "atlas":
        return load_atlas()
    if name == "mni":
        return load_mni()
    raise ValueError(f"unknown source {name!r}; choose from {', '.join(SOURCES + EXTRA_SOURCES)}")


FINDERS = {"invesalius": find_invesalius, "pydicom": find_pydicom_slice, "atlas": find_atlas,
           "mni": find_mni}  # the phantom needs none


def available_sources(requested: tuple[str, ...] = SOURCES, report=print) -> tuple[str, ...]:
    """The requested sources whose packages are present; one line per missing one."""
    usable = []
    for name in requested:
        if name not in SOURCES + EXTRA_SOURCES:
            raise ValueError(f"unknown source {name!r}; choose from {', '.join(SOURCES + EXTRA_SOURCES)}")
        try:
            if name in FINDERS:
                FINDERS[name]()
            usable.append(name)
        except SourceUnavailable as err:
            report(f"skipping source {err}")
    if not usable:
        raise SourceUnavailable("no usable anatomy source among " + ", ".join(requested))
    return tuple(usable)

