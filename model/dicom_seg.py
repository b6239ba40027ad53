"""The mask of a DICOM series as a DICOM Segmentation object, so it goes back to the PACS beside its CT.

Made with highdicom, which writes the references a viewer needs: every frame derived from the source
slice it lies on (SOP Instance UID), the source series and study, the frame of reference. One
segment, haemorrhage (SNOMED CT 50960005), marked AUTOMATIC and naming this product and its weights.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from model.atomic import atomic_path
from model.dicom_input import series_label, sorted_headers
from model.layouts import Case
from model.weights import Manifest

# highdicom logs warnings (an all-empty mask is stored with every frame) that would bury our lines.
logging.getLogger("highdicom").setLevel(logging.ERROR)

PRODUCT = "ich-segmentation"
PRODUCT_DESCRIPTION = "ICH segmentation container (INSTANCE 2022)"
HAEMORRHAGE = Code("50960005", "SCT", "Hemorrhage")
ABNORMAL_STRUCTURE = Code("49755003", "SCT", "Morphologically abnormal structure")
BRAIN = Code("12738006", "SCT", "Brain")
SEG_SERIES_OFFSET = 1000  # the SEG's SeriesNumber: the source's plus this, so viewers list them together


def seg_path(mask_path: Path) -> Path:
    """``<output>/<case>.nii.gz`` → ``<output>/<case>.seg.dcm``."""
    name = mask_path.name.removesuffix(".gz").removesuffix(".nii")
    return mask_path.with_name(f"{name}.seg.dcm")


def weights_version(manifest: Manifest) -> str:
    """Family, fold count and a digest of the fold hashes: which model made the mask, in 64 characters."""
    digest = hashlib.sha256("".join(f.sha256 for f in manifest.folds).encode()).hexdigest()[:12]
    return f"{manifest.family} x{len(manifest.folds)} {digest}"[:64]


def build_segmentation(mask: np.ndarray, sources: list[Dataset], manifest: Manifest) -> hd.seg.Segmentation:
    """A BINARY DICOM SEG of ``mask`` (slices, rows, columns; slice i lies on ``sources[i]``).

    Built in memory before any file of the case is written, so a series highdicom cannot reference
    (missing study or frame-of-reference attributes) fails the case with nothing written.
    """
    if mask.shape != (len(sources), int(sources[0].Rows), int(sources[0].Columns)):
        raise ValueError(f"mask shape {mask.shape} does not match {len(sources)} source slices")
    version = weights_version(manifest)
    algorithm = hd.AlgorithmIdentificationSequence(name=PRODUCT, family=codes.cid7162.ArtificialIntelligence,
                                                   version=version, source=PRODUCT_DESCRIPTION)
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label="haemorrhage", segmented_property_category=ABNORMAL_STRUCTURE,
        segmented_property_type=HAEMORRHAGE, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm, anatomic_regions=[BRAIN])
    source_number = int(sources[0].get("SeriesNumber", 0) or 0)
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=mask.astype(np.uint8, copy=False),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[segment],
        series_instance_uid=hd.UID(), series_number=source_number + SEG_SERIES_OFFSET,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=PRODUCT,
        manufacturer_model_name=PRODUCT_DESCRIPTION, software_versions=version, device_serial_number=version[-12:],
        series_description="ICH segmentation (automatic)", content_label="HAEMORRHAGE",
        content_description="Intracranial haemorrhage, automatic")


def segmentation_for_case(case: Case, mask: sitk.Image, manifest: Manifest) -> hd.seg.Segmentation:
    """The SEG of a DICOM case's mask, given in the series' own geometry (as written to NIfTI).

    The mask's slices are in the order :func:`model.dicom_input.read_series` stacked the files, which
    :func:`model.dicom_input.sorted_headers` reproduces, so frame i references source slice i. A mask
    on a grid the series was put on (several spacings, a tilted gantry) goes back onto the acquired
    slices first, undoing the steps in reverse.
    """
    sources, geometry = sorted_headers(case, series_label(case))
    array = sitk.GetArrayFromImage(mask)
    if geometry.restack is not None:
        array = geometry.restack.to_slices(array)
    if geometry.tilt is not None:
        array = geometry.tilt.to_slices(array, int(sources[0].Rows), int(sources[0].Columns))
    with warnings.catch_warnings():  # highdicom's advice on the source's own values (a one-part PatientName)
        warnings.simplefilter("ignore", UserWarning)
        return build_segmentation(array, sources, manifest)


def write_dataset_atomic(dataset: Dataset, path: Path) -> None:
    """Write to a temporary name beside the target, then rename: no half-written SEG is ever seen."""
    with atomic_path(path) as tmp:
        dataset.save_as(tmp, enforce_file_format=True)
