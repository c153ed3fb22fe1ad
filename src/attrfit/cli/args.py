"""Arguments shared by the subcommands, all generated from the typed config.

Each flag's name, help sentence, placeholder, default and range check come from its
config field (:mod:`attrfit.core.options`); nothing here restates them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from attrfit.core.errors import AttrfitError


def config_flag(p: argparse.ArgumentParser, key: str, flag: str | None = None) -> None:
    """A flag of config field ``key`` for commands that take it outside ``train`` (split, prepare).

    Help, placeholder, default and range check come from the field, and the value is
    checked as it is parsed; ``flag`` renames it (``schedule.kind`` is ``--schedule``).
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
    config_flag(p, "data.split_seed")


def add_cache_args(p: argparse.ArgumentParser) -> None:
    for key in ("data.size", "data.resize", "data.cache_dir", "data.skip_bad_images"):
        config_flag(p, key)


def add_data_args(p: argparse.ArgumentParser) -> None:
    """Everything that reads a table into split, cache and labels: the CSV, the split file and its options."""
    add_table_args(p)
    config_flag(p, "data.split")
    add_split_args(p)
    add_cache_args(p)


def data_config_from_args(args):
    from attrfit.data.load import DataConfig

    return DataConfig(
        csv=args.csv,
        images=args.images,
        heads=tuple(args.heads or ()),
        ignore_columns=None if args.ignore_columns is None else tuple(args.ignore_columns),
        group_column=args.group_column,
        split=args.split,
        test_fraction=args.test_fraction,
        val_fraction=args.val_fraction,
        split_seed=args.split_seed,
        stratify=args.stratify,
        size=args.size,
        resize=args.resize,
        cache_dir=args.cache_dir,
        skip_bad_images=args.skip_bad_images,
    )


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=1)
    sys.stdout.write("\n")


SECTION_TITLES = {
    "data": "data options", "model": "model options", "augment": "augmentation of training images",
    "schedule": "LR schedule", "optim": "optimizer and loss", "": "run options",
}


def add_config_flags(p, lr_find: bool = False) -> None:
    """One flag per config field (``--lr``, ``--cutout``, ``--flip/--no-flip``...), grouped by section.

    Help sentence, placeholder and range check come from the field (:mod:`attrfit.core.options`);
    unset flags stay None so a ``--config`` file (or the default) applies. With ``lr_find``,
    the flags of options the LR range test does not use are refused by name.
    """
    from attrfit.recipe.config import leaf_fields
    from attrfit.core.options import flag_of, help_text

    groups: dict[str, argparse._ArgumentGroup] = {}
    for key, (t, f) in leaf_fields().items():
        name = flag_of(f)
        if name is None:
            continue
        section = key.rpartition(".")[0]
        if section not in groups:
            groups[section] = p.add_argument_group(f"{SECTION_TITLES.get(section, section)} "
                                                   "(also settable in --config FILE)")
        flags = [f"--{name.replace('_', '-')}"] + ([f"--no-{name.replace('_', '-')}"] if t is bool else [])
        if lr_find and not f.metadata.get("lr_find", True):
            groups[section].add_argument(*flags, nargs=0 if t is bool else None, action=NotForLrFind,
                                         help=argparse.SUPPRESS)
        elif t is bool:
            groups[section].add_argument(flags[0], dest=f"cfg__{name}", default=None,
                                         action=argparse.BooleanOptionalAction, help=help_text(f))
        else:
            groups[section].add_argument(flags[0], dest=f"cfg__{name}", default=None, type=nonempty,
                                         metavar=f.metadata.get("metavar") or "VALUE", help=help_text(f))


def nonempty(text: str) -> str:
    """A flag value as typed; an empty one (often an unset shell variable) is refused, not read as 'default'."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty value; give a value or leave the flag out")
    return text


class NotForLrFind(argparse.Action):
    """A training-only flag given to ``lr-find``: refused, since the range test would silently ignore it."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is not used by lr-find (the LR range test sweeps the LR itself and "
                     "trains no epochs, so it never evaluates, reports or checkpoints); leave it out "
                     "(in a --config file it is allowed and ignored)")


def config_from_args(args):
    from attrfit.recipe.config import TrainConfig, apply, load_file
    from attrfit.core.errors import AttrfitError

    cfg = TrainConfig()
    if getattr(args, "config", None):
        cfg = apply(cfg, load_file(args.config), source=args.config)
    flags = {k[5:]: v for k, v in vars(args).items() if k.startswith("cfg__") and v is not None}
    if getattr(args, "csv", None):
        flags["data.csv"] = args.csv
    cfg = apply(cfg, flags, source="command line")  # range-checked: nothing is read or written before this
    if cfg.init_from and not Path(cfg.init_from).exists():
        raise AttrfitError(f"--init-from {cfg.init_from}: no such checkpoint or run folder")
    return cfg


def add_run_arg(p: argparse.ArgumentParser) -> None:
    """The trained model a command reads: the same name and meaning in evaluate, predict and export."""
    p.add_argument("run", metavar="RUN", help="run folder (its best.pt) or a checkpoint file")


def add_tta_arg(p: argparse.ArgumentParser) -> None:
    """--tta/--no-tta of evaluate and predict; unset (None) means what the run validated with (its train --tta)."""
    p.add_argument("--tta", default=None, action=argparse.BooleanOptionalAction,
                   help="average each image's prediction with its mirror's (default: as the run was trained, "
                        "i.e. its train --tta)")


def add_decide_arg(p: argparse.ArgumentParser) -> None:
    """--decide of evaluate, predict, compare and report: the rule that turns probabilities into labels."""
    from attrfit.evaluation.decisions import RULES

    p.add_argument("--decide", choices=RULES, default=None,
                   help="the decision rule: most-probable (for accuracy), prior-corrected (for balanced accuracy), "
                        "threshold-balanced or threshold-f1 (per binary head, thresholds chosen on the val side); "
                        "default: the run's own, from its train --objective (most-probable for runs without "
                        "decisions.json)")


def add_device_arg(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--device", default=default, metavar="DEVICE", help=f"auto, cpu, cuda or cuda:N (default {default})")
