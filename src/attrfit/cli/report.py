"""``attrfit report``: write a run's HTML report."""

from __future__ import annotations

from pathlib import Path

from attrfit.cli.args import add_decide_arg
from attrfit.core import outputs
from attrfit.core.errors import AttrfitError
from attrfit.evaluation.report import check_figures_folder, default_out, files_dir, make_report, save_report


def register(sub) -> None:
    p = sub.add_parser("report", help="write the HTML report of a run (figures embedded; opens offline)")
    p.add_argument("run", metavar="RUN", help="run folder written by 'attrfit train'")
    p.add_argument("--side", choices=["test", "val"], default="test", help="side of the split to score (default test)")
    add_decide_arg(p)
    p.add_argument("--out", metavar="FILE",
                   help="HTML file to write (default RUN/report.html; figures go to <name>_files/ beside it)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file (never an input or a run's file)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_report)


def run_report(args) -> int:
    default = default_out(Path(args.run), args.side)
    out = Path(args.out) if args.out else default
    # before the scoring: never an input or a run's file, no other existing file without --force
    outputs.check_output(out, args.force, outputs.Protected.of_runs([Path(args.run)]), "report", default=default)
    if out != default:
        outputs.check_output_folder(files_dir(out), "report's figures")
    check_figures_folder(out)
    try:
        report = make_report(args.run, side=args.side, progress=not args.quiet, decide=args.decide)
    except MemoryError:
        raise AttrfitError(f"out of memory while drawing the report of {args.run}; the run itself is untouched. "
                           "Free memory (close other programs) and run 'attrfit report' again") from None
    path = save_report(report, out)
    for w in report.warnings:
        print(f"warning: {w}")
    print(f"report: {path}")
    return 0
