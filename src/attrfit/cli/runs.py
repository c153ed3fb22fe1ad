"""``attrfit runs``: list run folders with their state and scores."""

from __future__ import annotations

import dataclasses
import sys

from attrfit.cli.args import print_json
from attrfit.core.listing import format_runs, list_runs


def register(sub) -> None:
    p = sub.add_parser("runs", help="list run folders: when, data, settings, state, val and test scores")
    p.add_argument("folder", nargs="?", default="runs", help="folder holding run folders (default ./runs)")
    p.add_argument("--json", action="store_true", help="print only JSON on stdout")
    p.set_defaults(func=run)


def run(args) -> int:
    found = list_runs(args.folder)
    if args.json:
        print_json([dataclasses.asdict(r) for r in found])
    else:
        sys.stdout.write(format_runs(found) + "\n")
    return 0
