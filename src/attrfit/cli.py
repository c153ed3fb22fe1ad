"""The ``attrfit`` command line: one subcommand per pipeline stage.

User mistakes (:class:`AttrfitError`) print one line on stderr and exit 2; ``-v`` shows
details and tracebacks. Ctrl-C exits 130. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from attrfit import __version__
from attrfit.errors import AttrfitError

log = logging.getLogger("attrfit")

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def add_table_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("csv", help="labels CSV with an image_path column and one column per attribute")
    p.add_argument("--images", help="folder the image paths are relative to (default: the CSV's folder)")
    p.add_argument("--heads", type=_csv_list, help="comma-separated label columns (default: all others)")
    p.add_argument("--ignore-columns", type=_csv_list, help="comma-separated columns that are not labels (default: filename)")
    p.add_argument("--group-column", help="column whose values must never straddle sides (e.g. person_id)")


def add_split_args(p: argparse.ArgumentParser) -> None:
    # unset (None) unless given: an existing split file is checked against what was given
    p.add_argument("--test-fraction", type=float, help="share of rows held out for test (default 0.15)")
    p.add_argument("--val-fraction", type=float, help="share of rows for validation (default 0.1)")
    p.add_argument("--stratify", help="head whose class ratios are kept across sides, or 'none' (default: the first head)")
    p.add_argument("--seed", type=int, help="split seed (default 0)")


def add_cache_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", default="64x64", help="HxW the images are resized to (default 64x64)")
    p.add_argument("--resize", choices=["stretch", "pad"], default="stretch", help="stretch to size, or keep aspect and pad")
    p.add_argument("--cache-dir", help="where decoded images are cached (default ~/.cache/attrfit or $ATTRFIT_CACHE_DIR)")
    p.add_argument("--skip-bad-images", action="store_true", help="drop unreadable images from every side instead of stopping")


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attrfit",
        description="Train multi-head image attribute classifiers from scratch, and tell the truth about how good they are.",
    )
    parser.add_argument("--version", action="version", version=f"attrfit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show details and tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for register in commands():
        register(sub)
    return parser


def commands() -> list:
    """Every subcommand's register function, in ``--help`` order.

    Imported here, not at module level: the stage modules import helpers from
    ``attrfit.commands``, which imports this module.
    """
    from attrfit import commands as core
    from attrfit import audit, compare, export, lr_find, predict, report

    return [*core.REGISTRY, lr_find.register, report.register, compare.register_compare, compare.register_runs,
            predict.register, export.register, audit.register]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    other_rank = os.environ.get("RANK", "0") != "0"  # under torchrun only rank 0 logs progress
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if other_rank else logging.INFO,
        format="%(message)s" if not args.verbose else "%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if hasattr(sys.stdout, "reconfigure"):  # file names need not be UTF-8: print them as the bytes they are
        sys.stdout.reconfigure(errors="surrogateescape")
    try:
        return int(args.func(args) or 0)
    except AttrfitError as e:
        if args.verbose:
            log.exception("details")
        print(f"attrfit: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as e:  # train raises it with how to resume
        print(f"attrfit: interrupted{'; ' + str(e) if str(e) else ''}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        print("attrfit: error: out of memory; lower --batch-size or --size", file=sys.stderr)
        return EXIT_USER_ERROR


def out_path(text: str | None) -> Path | None:
    return Path(text) if text else None
