"""report.html: one self-contained page (pictures embedded as PNG) to look at an evaluation.

The summary, a table of cases, the DSC distribution, predicted against true volume with a
Bland–Altman plot, and per case the axial slice with the most haemorrhage: CT in a brain window
with the label's and the prediction's outlines. matplotlib is an evaluation-only dependency
(requirements-eval.txt), imported inside the functions that draw so the rest never needs it.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from model.windowing import BRAIN_WINDOW

if TYPE_CHECKING:
    from evaluation.scoring import CaseResult

PICTURE_WIDTH = 256
LABEL_RGB = (0, 230, 0)
PREDICTION_RGB = (255, 0, 255)
BOTH_RGB = (255, 255, 255)


@dataclass(frozen=True)
class CaseSlice:
    """One axial slice (canonical LPS: rows anterior→posterior, columns right→left) to draw."""

    index: int
    label: np.ndarray
    prediction: np.ndarray
    ct: np.ndarray | None
    spacing_yx: tuple[float, float]


def _outline(mask: np.ndarray, zoom: tuple[float, float], shape: tuple[int, int]) -> np.ndarray:
    """The mask's boundary at display size; thickened before shrinking so thin outlines survive."""
    edge = mask & ~ndimage.binary_erosion(mask, border_value=0)
    grow = max(1, math.ceil(1 / min(zoom)))
    if grow > 1:
        edge = ndimage.maximum_filter(edge, size=grow)
    return _resize(edge, shape, order=0)


def _resize(array: np.ndarray, shape: tuple[int, int], order: int) -> np.ndarray:
    zoom = (shape[0] / array.shape[0], shape[1] / array.shape[1])
    return ndimage.zoom(array.astype(np.float32 if order else array.dtype), zoom, order=order, grid_mode=True,
                        mode="nearest")[: shape[0], : shape[1]]


def slice_rgb(s: CaseSlice, width: int = PICTURE_WIDTH) -> np.ndarray:
    """The slice as an RGB uint8 picture ``width`` pixels wide at the true aspect ratio: the CT in the
    brain window (black without a CT), the label outlined in green, the prediction in magenta."""
    rows, cols = s.label.shape
    height = max(1, round(width * rows * s.spacing_yx[0] / (cols * s.spacing_yx[1])))
    shape = (height, width)
    zoom = (height / rows, width / cols)
    if s.ct is None:
        grey = np.zeros(shape, np.uint8)
    else:
        low, high = BRAIN_WINDOW
        ct = _resize(np.clip(s.ct, low, high), shape, order=1)
        grey = np.round((ct - low) / (high - low) * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    label, prediction = _outline(s.label, zoom, shape), _outline(s.prediction, zoom, shape)
    rgb[label] = LABEL_RGB
    rgb[prediction] = PREDICTION_RGB
    rgb[label & prediction] = BOTH_RGB
    return rgb


def case_picture(s: CaseSlice, width: int = PICTURE_WIDTH) -> bytes:
    """:func:`slice_rgb` encoded as PNG."""
    from matplotlib.image import imsave

    buffer = io.BytesIO()
    imsave(buffer, slice_rgb(s, width), format="png")
    return buffer.getvalue()


def _figure_png(draw: Any, size: tuple[float, float] = (4.2, 3.4)) -> bytes:
    """Run ``draw(axes)`` on a new figure and return it as PNG (no pyplot, so no global backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=90, layout="constrained")
    FigureCanvasAgg(figure)
    draw(figure.add_subplot())
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def dsc_figure(dsc: np.ndarray) -> bytes:
    """Histogram of per-case DSC with every case as a tick underneath."""
    def draw(ax: Any) -> None:
        ax.hist(dsc, bins=np.linspace(0, 1, 21), color="#4c72b0", edgecolor="white")
        ax.plot(dsc, np.full_like(dsc, -0.3), "|", color="black", markersize=10)
        ax.set(xlim=(-0.03, 1.03), xlabel="DSC", ylabel="cases", title=f"DSC per case (n={dsc.size})")
        ax.yaxis.get_major_locator().set_params(integer=True)
    return _figure_png(draw)


def volume_figure(true_ml: np.ndarray, pred_ml: np.ndarray) -> bytes:
    """Predicted against true haemorrhage volume with the line of identity."""
    def draw(ax: Any) -> None:
        top = max(float(np.max(true_ml, initial=0)), float(np.max(pred_ml, initial=0)), 1.0) * 1.05
        ax.plot([0, top], [0, top], color="grey", linewidth=1, label="identity")
        ax.scatter(true_ml, pred_ml, s=14, color="#dd8452", label="case")
        ax.set(xlim=(0, top), ylim=(0, top), xlabel="true volume (mL)", ylabel="predicted volume (mL)",
               title="Volume")
        ax.legend(loc="upper left", fontsize=8)
    return _figure_png(draw)


def bland_altman_figure(true_ml: np.ndarray, pred_ml: np.ndarray) -> bytes:
    """Difference (predicted − true) against mean volume, with the bias and the 95 % limits of agreement."""
    def draw(ax: Any) -> None:
        mean, diff = (true_ml + pred_ml) / 2, pred_ml - true_ml
        bias, sd = float(np.mean(diff)), float(np.std(diff, ddof=1)) if diff.size > 1 else 0.0
        ax.scatter(mean, diff, s=14, color="#55a868")
        ax.axhline(bias, color="black", linewidth=1, label=f"bias {bias:+.2f} mL")
        for limit in (bias - 1.96 * sd, bias + 1.96 * sd):
            ax.axhline(limit, color="black", linewidth=1, linestyle="--")
        ax.plot([], [], color="black", linestyle="--", label=f"±1.96 SD ({1.96 * sd:.2f} mL)")
        ax.set(xlabel="mean of predicted and true (mL)", ylabel="predicted − true (mL)", title="Bland–Altman")
        ax.legend(loc="best", fontsize=8)
    return _figure_png(draw)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _fmt(value: object, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else str(value)
    return html.escape(str(value))


CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1400px}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
td.l,th.l{text-align:left}tr.flag td{background:#fff4e0}.figs img{margin:4px;border:1px solid #ddd}
.cases{display:flex;flex-wrap:wrap;gap:8px}.cases figure{margin:0;font-size:12px;width:260px}
.key span{display:inline-block;width:1em;height:.6em;margin:0 .3em 0 1em}"""


def _summary_table(summary: Mapping[str, Any]) -> str:
    stats = ("mean", "std", "median", "count", "inf", "nan", "finite_mean")
    head = "".join(f"<th>{s}</th>" for s in stats)
    rows = "".join(
        f"<tr><td class=l>{m.upper()}</td>" + "".join(f"<td>{_fmt(v if isinstance(v, int) else float(v))}</td>"
                                                    for v in (values[s] for s in stats)) + "</tr>"
        for m, values in summary["metrics"].items())
    return f"<table><tr><th class=l>metric</th>{head}</tr>{rows}</table>"


def _case_table(results: Sequence[CaseResult]) -> str:
    head = "".join(f"<th>{c}</th>" for c in ("DSC", "HD (mm)", "RVD", "NSD", "true mL", "pred. mL"))
    rows = []
    for r in results:
        cells = "".join(f"<td>{_fmt(v)}</td>" for v in (r.dsc, r.hd, r.rvd, r.nsd))
        cells += "".join(f"<td>{_fmt(v, 2)}</td>" for v in (r.label_ml, r.pred_ml))
        name = f'<a href="#case-{html.escape(r.case)}">{html.escape(r.case)}</a>' if r.picture else html.escape(r.case)
        rows.append(f'<tr{" class=flag" if r.note else ""}><td class=l>{name}</td>{cells}'
                    f"<td class=l>{html.escape(r.note)}</td></tr>")
    return f"<table><tr><th class=l>case</th>{head}<th class=l>note</th></tr>{''.join(rows)}</table>"


def render_report(results: Sequence[CaseResult], summary: Mapping[str, Any], title: str = "Evaluation") -> str:
    """The whole report as one HTML string."""
    scored = [r for r in results if r.scored]
    dsc = np.array([r.dsc for r in scored], dtype=np.float64)
    true_ml = np.array([r.label_ml for r in scored], dtype=np.float64)
    pred_ml = np.array([r.pred_ml for r in scored], dtype=np.float64)
    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p>{summary['scored']} of {summary['cases']} cases scored with the INSTANCE 2022 definitions "
             "(DSC, maximum surface distance HD, absolute RVD, NSD at 0.42 mm).</p>",
             "<h2>Summary</h2>", _summary_table(summary)]
    if summary.get("unmatched_predictions"):
        parts.append("<p>Predictions without a label (not scored): "
                     f"{html.escape(', '.join(summary['unmatched_predictions']))}</p>")
    if scored:
        parts += ['<h2>Distributions</h2><div class="figs">', _img(dsc_figure(dsc), "DSC distribution"),
                  _img(volume_figure(true_ml, pred_ml), "predicted against true volume"),
                  _img(bland_altman_figure(true_ml, pred_ml), "Bland-Altman plot"), "</div>"]
    parts += ["<h2>Cases</h2>", _case_table(results)]
    pictured = [r for r in results if r.picture]
    if pictured:
        parts.append('<h2>Slice with the most haemorrhage</h2><p class="key">Brain window 0–80 HU, radiological '
                     f'view.<span style="background:rgb{LABEL_RGB}"></span>label'
                     f'<span style="background:rgb{PREDICTION_RGB}"></span>prediction'
                     f'<span style="background:rgb{BOTH_RGB};border:1px solid #999"></span>both</p>'
                     '<div class="cases">')
        for r in pictured:
            parts.append(f'<figure id="case-{html.escape(r.case)}">{_img(r.picture or b"", r.case)}<figcaption>'
                         f"<b>{html.escape(r.case)}</b> DSC {_fmt(r.dsc, 3)}, HD {_fmt(r.hd, 1)} mm, "
                         f"{_fmt(r.label_ml, 1)} / {_fmt(r.pred_ml, 1)} mL</figcaption></figure>")
        parts.append("</div>")
    parts.append("</body></html>\n")
    return "".join(parts)
