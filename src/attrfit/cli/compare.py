"""``attrfit compare``: runs on the same test images, paired differences and verdicts."""

from __future__ import annotations

import logging
from pathlib import Path

from attrfit.cli.args import add_decide_arg, print_json
from attrfit.core import outputs
from attrfit.evaluation.bootstrap import N_BOOT
from attrfit.evaluation.compare import compare_runs
from attrfit.evaluation.compare_page import format_comparison, write_html

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("compare", help="compare runs on the same test images: paired differences and verdicts")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (the first is the baseline A)")
    p.add_argument("--html", metavar="OUT", help="also write a self-contained HTML page (figures embedded)")
    p.add_argument("--force", action="store_true", help="replace an existing --html file (never an input or a run's file)")
    p.add_argument("--json", action="store_true", help="print only JSON on stdout")
    p.add_argument("--n-boot", type=int, default=N_BOOT, metavar="N", help=f"bootstrap resamples (default {N_BOOT})")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="bootstrap seed (default 0)")
    add_decide_arg(p)
    p.set_defaults(func=run_compare)


def run_compare(args) -> int:
    if args.html:  # before the scoring: never an input or a run's file, no other existing file without --force
        reads = outputs.Protected.of_runs([Path(r) for r in args.runs])
        outputs.check_output(args.html, args.force, reads, "comparison page", "--html")
    c = compare_runs(args.runs, n_boot=args.n_boot, seed=args.seed, progress=not args.json, decide=args.decide)
    if args.html:
        path = write_html(c, args.html)
        log.info("wrote %s", path)
    if args.json:
        print_json(c.to_dict())
    else:
        print(format_comparison(c))
    return 0
