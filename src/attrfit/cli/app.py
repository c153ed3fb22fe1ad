"""The ``attrfit`` command line: one subcommand per pipeline stage.

User mistakes (:class:`AttrfitError`) print one line on stderr and exit 2; ``-v`` shows
details and tracebacks. Ctrl-C exits 130. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys

from attrfit.core.version import __version__
from attrfit.cli import audit, compare, dataset, export, lr_find, predict, report, runs
from attrfit.cli import commands as core
from attrfit.core.errors import AttrfitError
from attrfit.core.memory import keep_freed_memory

log = logging.getLogger("attrfit")

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """argparse whose mistakes end as attrfit's one error line (exit 2), not usage text and a second format."""

    commands: dict[str, argparse.ArgumentParser] = {}  # set on the top-level parser by build_parser

    def error(self, message: str):
        raise AttrfitError(f"{message} (see '{self.prog} --help')")

    def parse_args(self, args=None, namespace=None):
        """As argparse, but an unknown flag is named with the command's flag it most resembles."""
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            sub = self.commands.get(getattr(ns, "command", None) or "", self)
            flags = [o for a in sub._actions for o in a.option_strings if a.help != argparse.SUPPRESS]
            close = difflib.get_close_matches(extras[0].split("=")[0], flags, n=1)
            hint = f"; did you mean {close[0]}?" if close and extras[0].startswith("-") else ""
            raise AttrfitError(f"unrecognized argument(s) {' '.join(extras)}{hint} (see '{sub.prog} --help')")
        return ns


def add_verbose(p: argparse.ArgumentParser, default=False) -> None:
    p.add_argument("-v", "--verbose", action="store_true", default=default, help="show details and tracebacks")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="attrfit",
        description="Train multi-head image attribute classifiers from scratch, and tell the truth about how good they are.",
    )
    parser.add_argument("--version", action="version", version=f"attrfit {__version__}")
    add_verbose(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for register in commands():
        register(sub)
    for p in sub.choices.values():  # -v also after the command; SUPPRESS keeps a -v given before it
        add_verbose(p, default=argparse.SUPPRESS)
    parser.commands = dict(sub.choices)
    return parser


def commands() -> list:
    """Every subcommand's register function, in ``--help`` order (the data path's order)."""
    return [dataset.register, *core.REGISTRY, lr_find.register, report.register, compare.register, runs.register,
            predict.register, export.register, audit.register]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except AttrfitError as e:
        print(f"attrfit: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    if args.command is None:  # a bare 'attrfit': what there is to do, one line per command
        print(parser.format_help(), file=sys.stderr)
        print("attrfit: error: give a COMMAND from the list above; 'attrfit COMMAND --help' shows its options",
              file=sys.stderr)
        return EXIT_USER_ERROR
    other_rank = os.environ.get("RANK", "0") != "0"  # under torchrun only rank 0 logs progress
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if other_rank else logging.INFO,
        format="%(message)s" if not args.verbose else "%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    keep_freed_memory()  # a process of attrfit's own: training and prediction reuse freed tensors' pages
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
        advice = "; lower --batch-size or --size" if args.command in ("train", "demo", "lr-find") else ""
        print(f"attrfit: error: out of memory in 'attrfit {args.command}'{advice}", file=sys.stderr)
        return EXIT_USER_ERROR
