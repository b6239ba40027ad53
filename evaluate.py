"""Score predicted masks with the INSTANCE 2022 metrics, or rank several prediction folders.

Score one folder (metrics.csv, summary.json and report.html in the output folder):

    python evaluate.py --predictions DIR --labels DIR --output-dir DIR [--images DIR] [--workers N]

Cases pair by file name without its extension (.nii.gz, .nii, .mha on both sides). A label without a
prediction is scored as an empty prediction and flagged; a prediction without a label is listed and
skipped. Spacing comes from the label's header; the prediction's header is ignored, as officially.

Rank several entries as the challenge did (each metric's mean ranked, ranks averaged, ties equal):

    python evaluate.py rank DIR1 DIR2 ... [--labels DIR] [--output-dir DIR] [--workers N]

Each DIR is either a folder holding a summary.json from this tool (its means are used) or a folder
of predictions, scored against --labels first. Prints the table and writes ranking.csv.
Exit status: 0 when the run finished (cases with problems are noted in their rows), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

from evaluation.scoring import (
    CaseResult,
    default_workers,
    evaluate_pairs,
    format_ranking,
    pair_files,
    rank,
    read_summary_means,
    summarise,
    write_metrics_csv,
    write_ranking_csv,
    write_summary,
)


def _progress(results: Iterable[CaseResult], total: int) -> Iterable[CaseResult]:
    from tqdm import tqdm

    return tqdm(results, total=total, desc="cases", unit="case", file=sys.stderr)


def _workers(value: str) -> int:
    workers = int(value)
    if workers < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return workers


def score_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="See the module docstring.")
    parser.add_argument("--predictions", type=Path, required=True, help="folder of predicted masks")
    parser.add_argument("--labels", type=Path, required=True, help="folder of reference labels")
    parser.add_argument("--output-dir", type=Path, required=True, help="where metrics.csv etc. are written")
    parser.add_argument("--images", type=Path, default=None,
                        help="folder of the CTs (same case names), drawn under the outlines in report.html")
    parser.add_argument("--workers", type=_workers, default=default_workers(),
                        help="cases scored in parallel (default: the CPUs available)")
    parser.add_argument("--no-report", action="store_true", help="skip report.html (faster)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def rank_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate.py rank",
        description="Rank entries as INSTANCE 2022 did: each metric's mean ranked across entries (DSC, NSD "
                    "higher is better; HD, RVD lower), ranks averaged. Equal means share the best of their "
                    "ranks (1, 2, 2, 4), as grand-challenge leaderboards do.")
    parser.add_argument("entries", type=Path, nargs="+",
                        help="folders holding a summary.json of this tool, or prediction folders (need --labels)")
    parser.add_argument("--labels", type=Path, default=None, help="labels, to score prediction folders")
    parser.add_argument("--output-dir", type=Path, default=Path("."), help="where ranking.csv goes (default .)")
    parser.add_argument("--workers", type=_workers, default=default_workers())
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def score(args: argparse.Namespace) -> int:
    """Score one prediction folder and write its outputs."""
    pairs, unmatched = pair_files(args.predictions, args.labels, args.images)
    results = evaluate_pairs(pairs, args.workers, picture=not args.no_report,
                             progress=None if args.quiet else _progress)
    summary = summarise(results, unmatched)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_metrics_csv(results, args.output_dir / "metrics.csv")
    write_summary(summary, args.output_dir / "summary.json")
    if not args.no_report:
        from evaluation.report import render_report

        report = render_report(results, summary, title=f"Evaluation of {args.predictions.resolve().name}")
        (args.output_dir / "report.html").write_text(report, encoding="utf-8")
    means = ", ".join(f"{m.upper()} {v['mean']:.4f}" if isinstance(v["mean"], float) else f"{m.upper()} {v['mean']}"
                      for m, v in summary["metrics"].items())
    print(f"{summary['scored']}/{summary['cases']} cases scored: {means}")
    for case, note in {**summary["not_scored"], **summary["flagged"]}.items():
        print(f"  {case}: {note}")
    if unmatched:
        print(f"  predictions without a label (skipped): {', '.join(unmatched)}")
    print(f"written to {args.output_dir}")
    return 0


def rank_entries(args: argparse.Namespace) -> int:
    """Means of every entry (read or scored), ranked; the table printed and ranking.csv written."""
    means: dict[str, dict[str, float]] = {}
    for entry in args.entries:
        name = entry.resolve().name
        if name in means:
            raise ValueError(f"{entry}: two entries named {name!r}")
        if (entry / "summary.json").is_file():
            means[name] = read_summary_means(entry / "summary.json")
            continue
        if args.labels is None:
            raise ValueError(f"{entry}: no summary.json there; give --labels to score it as a prediction folder")
        pairs, _ = pair_files(entry, args.labels)
        summary = summarise(evaluate_pairs(pairs, args.workers, progress=None if args.quiet else _progress))
        means[name] = {m: float(v["mean"]) for m, v in summary["metrics"].items()}
    rows = rank(means)
    print(format_ranking(rows))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_ranking_csv(rows, args.output_dir / "ranking.csv")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ranking = bool(argv) and argv[0] == "rank"
    parser = rank_parser() if ranking else score_parser()
    args = parser.parse_args(argv[1:] if ranking else argv)
    try:
        return rank_entries(args) if ranking else score(args)
    except (ValueError, OSError) as err:
        print(f"evaluate.py: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
