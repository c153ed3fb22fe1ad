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
from pathlib import Path

from attrfit import __version__
from attrfit.core.errors import AttrfitError

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


def config_flag(p: argparse.ArgumentParser, key: str, flag: str | None = None) -> None:
    """A flag of config field ``key`` for commands that take it outside ``train`` (split, prepare).

    Help, placeholder, default and range check come from the field, and the value is
    checked as it is parsed; ``flag`` renames it (``split --seed`` is ``data.split_seed``).
    """
    from attrfit.recipe.config import coerce, leaf_fields
    from attrfit.core.options import check_value, default_of, flag_of, help_text

    t, f = leaf_fields()[key]
    name = flag or flag_of(f)
    option = f"--{name.replace('_', '-')}"
    if t is bool:
        p.add_argument(option, action="store_true", help=help_text(f))
        return

    def parse(text: str):
        if not text.strip():
            raise AttrfitError(f"{option} was given an empty value; give a value or leave the flag out")
        value = coerce(key, t, text)
        check_value(key, name, f, value)  # AttrfitError passes through argparse to main's one line
        return value

    default = default_of(f)
    p.add_argument(option, type=parse, default=None if default == () else default,
                   metavar=f.metadata.get("metavar"), help=help_text(f))


def add_table_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("csv", help="labels CSV with an image_path column and one column per attribute")
    for key in ("data.images", "data.heads", "data.ignore_columns", "data.group_column"):
        config_flag(p, key)


def add_split_args(p: argparse.ArgumentParser) -> None:
    for key in ("data.test_fraction", "data.val_fraction", "data.stratify"):
        config_flag(p, key)
    config_flag(p, "data.split_seed", flag="seed")


def add_cache_args(p: argparse.ArgumentParser) -> None:
    for key in ("data.size", "data.resize", "data.cache_dir", "data.skip_bad_images"):
        config_flag(p, key)


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
    """Every subcommand's register function, in ``--help`` order.

    Imported here, not at module level: the stage modules import helpers from
    ``attrfit.cli.commands``, which imports this module.
    """
    from attrfit.cli import commands as core
    from attrfit.evaluation import compare, report
    from attrfit.serving import export, predict
    from attrfit.training import lr_find

    return [*core.REGISTRY, lr_find.register, report.register, compare.register_compare, compare.register_runs,
            predict.register, export.register]


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


def out_path(text: str | None) -> Path | None:
    return Path(text) if text else None
