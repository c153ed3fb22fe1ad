"""``attrfit report``: write a run's HTML report."""

from __future__ import annotations

from pathlib import Path

from attrfit.core import files
from attrfit.core.errors import AttrfitError
from attrfit.evaluation.report import default_out, make_report, save_report


def register(sub) -> None:
    p = sub.add_parser("report", help="write the HTML report of a run (figures embedded; opens offline)")
    p.add_argument("run", metavar="RUN", help="run folder written by 'attrfit train'")
    p.add_argument("--side", choices=["test", "val"], default="test", help="side of the split to score (default test)")
    p.add_argument("--out", help="HTML file to write (default RUN/report.html; figures go to <name>_files/ beside it)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_report)


def run_report(args) -> int:
    from attrfit.core import runs

    out = Path(args.out) if args.out else default_out(Path(args.run), args.side)
    if args.out:  # a writable place that is not a file of the run, found before the scoring
        files.check_output(out, True, [p for p in runs.own_files(Path(args.run)) if p.suffix != ".html"], "report")
    try:
        report = make_report(args.run, side=args.side, progress=not args.quiet)
    except MemoryError:
        raise AttrfitError(f"out of memory while drawing the report of {args.run}; the run itself is untouched. "
                           "Free memory (close other programs) and run 'attrfit report' again") from None
    path = save_report(report, out)
    for w in report.warnings:
        print(f"warning: {w}")
    print(f"report: {path}")
    return 0
