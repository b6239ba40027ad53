"""What the shipped model paints on the real head CTs without blood that can be had offline (SPEC §6).

    python3 bench/real_heads.py [--weights weights]

The InVesalius head (Debian ``invesalius-examples``) at its own 0.96 mm, as 4.8 mm slabs, and as a
gantry tilted by 18.5° acquires it, stored without correction, at 1.9 mm (one of the issue tracker's
real heads without blood has that tilt), and the pydicom slice (PyPI ``pydicom-data``) extruded at
2 mm and as 4 mm slabs, each run through the
predictor and the post-processing as ``process.py`` runs a case. Per view: the mL at the threshold,
after the intracranial and size filters, and in the final mask (with the never-empty fallback). The
generator uses the same anatomy, so these heads are not unseen; they show whether the filters and the
fallback's cap hold on real skull base, vertex and soft tissue. Every slice of the thick views is also
run alone, as a one-slice input (which keeps components down to the manifest's single-slice minimum):
the most any one slice gets, and how many get more than the fallback. A missing source is one line,
not an error.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.anatomy import blood_space, on_bone_below
from model.postprocess import postprocess
from model.predictor import PAD_HU, EnsemblePredictor
from model.spacing import voxel_ml
from model.weights import load_manifest, load_models
from synthetic.sources import SourceUnavailable, load_invesalius, load_pydicom

View = tuple[str, np.ndarray, tuple[float, float, float]]
THICK = ("4.8 mm", "4 mm")  # the views whose slices are also run one at a time
TILT_DEG = 18.5  # the tilted real head's gantry tilt (issue 16)


def slabs(hu: np.ndarray, spacing: tuple[float, float, float], k: int) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Every ``k`` consecutive slices averaged into one (a thick-slice scan of the same head; a remainder
    is dropped)."""
    n = len(hu) // k * k
    return hu[:n].reshape(-1, k, *hu.shape[1:]).mean(axis=1), (spacing[0] * k, spacing[1], spacing[2])


def tilted(hu: np.ndarray, spacing: tuple[float, float, float], degrees: float) -> np.ndarray:
    """The head as a gantry tilted by ``degrees`` acquires it, its slices stored without correction:
    each axial slice moved along y (front to back) in proportion to its height."""
    step = math.tan(math.radians(degrees)) * spacing[0] / spacing[1]  # pixels per slice
    centre = (len(hu) - 1) / 2
    return np.stack([ndimage.shift(plane, ((z - centre) * step, 0.0), order=1, cval=PAD_HU)
                     for z, plane in enumerate(hu)])


def views() -> Iterator[View]:
    """(name, HU, spacing) of each available real head, thin and as thick slabs."""
    for name, load, k, thin, thick in (("invesalius", load_invesalius, 5, "0.96 mm", "4.8 mm"),
                                       ("pydicom", load_pydicom, 2, "2 mm", "4 mm")):
        try:
            anatomy = load()
        except SourceUnavailable as error:
            print(f"{name}: unavailable ({error})", flush=True)
            continue
        yield f"{name} {thin}", anatomy.hu, anatomy.spacing
        yield (f"{name} {thick}", *slabs(anatomy.hu, anatomy.spacing, k))
        if name == "invesalius":
            hu, spacing = slabs(tilted(anatomy.hu, anatomy.spacing, TILT_DEG), anatomy.spacing, 2)
            yield f"{name} tilted {TILT_DEG}°, {spacing[0]:.1f} mm", hu, spacing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=Path(__file__).resolve().parents[1] / "weights")
    args = parser.parse_args(argv)
    manifest = load_manifest(args.weights)
    device = torch.device("cpu")
    predictor = EnsemblePredictor(load_models(args.weights, manifest, device), manifest, device)
    finals, single = [], []
    for name, hu, spacing in views():
        hu = np.ascontiguousarray(hu, dtype=np.float32)
        prob = predictor.predict(hu, spacing).prob
        ml = voxel_ml(spacing)
        # the filters' spaces, once for both calls
        inside, floor = blood_space(hu, spacing), on_bone_below(hu, spacing[0])
        filtered = postprocess(prob, spacing, manifest.threshold, replace(manifest.postprocess, never_empty=False),
                               inside=inside, floor=floor).mask
        final = postprocess(prob, spacing, manifest.threshold, manifest.postprocess, inside=inside, floor=floor)
        finals.append(float(final.mask.sum()) * ml)
        print(f"{name}: {hu.shape[0]} slices, at threshold {float((prob >= manifest.threshold).sum()) * ml:.3f} mL, "
              f"after filters {float(filtered.sum()) * ml:.3f} mL, final {finals[-1]:.3f} mL"
              f"{' (never-empty fallback)' if final.fallback else ''}", flush=True)
        if name.endswith(THICK):
            alone = [postprocess(predictor.predict(hu[z:z + 1], spacing).prob, spacing, manifest.threshold,
                                 manifest.postprocess, hu=hu[z:z + 1]) for z in range(len(hu))]
            painted = [float(c.mask.sum()) * ml for c in alone]
            single.extend(painted)
            findings = [v for v, c in zip(painted, alone, strict=True) if v and not c.fallback]
            print(f"{name}, each slice alone: {len(alone)} slices, at most {max(painted):.3f} mL, "
                  f"{len(findings)} beyond the fallback ({sum(findings):.3f} mL)", flush=True)
    print(f"heads={len(finals)} max_final_ml={max(finals, default=0.0):.3f} "
          f"max_single_slice_ml={max(single, default=0.0):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
