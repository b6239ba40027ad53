"""Everything written for one case: the mask, a DICOM series' SEG, the optional QC picture.

All or nothing: a DICOM SEG is built in memory before any file is written, each file is written
under a temporary name and renamed, and when a later file fails the earlier ones of the case are
removed. A failed case never leaves a mask behind that results.json does not list. A series the
standard gives no SEG (one lacking a frame of reference or study attributes that a SEG must copy, as
old anonymised files do) still gets its mask; results.json says why it has no SEG.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from model.io import write_image_atomic
from model.layouts import Case
from model.weights import Manifest


@dataclass(frozen=True)
class QcRequest:
    """The QC picture to draw: where, from which canonical HU array and mask, with which title."""

    path: Path
    hu: np.ndarray
    mask: np.ndarray
    spacing_zyx: tuple[float, ...]
    title: str


def write_case_outputs(case: Case, mask: sitk.Image, manifest: Manifest, qc: QcRequest | None = None) -> dict:
    """Write the case's files; return their paths for results.json (``dicom_seg``, ``qc``) beyond the mask,
    and ``dicom_seg_skipped``, why a DICOM series has no SEG, where it has none."""
    writes: list[tuple[Path, Callable[[], None]]] = [(case.output_path,
                                                      lambda: write_image_atomic(mask, case.output_path))]
    paths: dict[str, str | None] = {}
    if case.series:
        from model.dicom_seg import seg_path, segmentation_for_case, write_dataset_atomic

        try:
            seg = segmentation_for_case(case, mask, manifest)
        except (ValueError, AttributeError) as err:  # highdicom: a source attribute the SEG must copy
            paths |= {"dicom_seg": None, "dicom_seg_skipped": " ".join(str(err).split())[:200]}
        else:
            seg_file = seg_path(case.output_path)
            writes.append((seg_file, lambda: write_dataset_atomic(seg, seg_file)))
            paths["dicom_seg"] = str(seg_file)
    if qc is not None:
        from model.qc import write_qc_png

        writes.append((qc.path, lambda: write_qc_png(qc.hu, qc.mask, qc.spacing_zyx, qc.title, qc.path)))
        paths["qc"] = str(qc.path)
    written: list[Path] = []
    try:
        for target, write in writes:
            write()
            written.append(target)
    except BaseException:  # SIGTERM included: what this case wrote goes with it
        for target in written:
            target.unlink(missing_ok=True)
        raise
    return paths
