"""``attrfit lr-find``: the LR range test from the command line."""

from __future__ import annotations

from pathlib import Path

import attrfit
from attrfit.cli.args import add_config_flags, config_from_args
from attrfit.training.lr_find import check_sweep_args, describe
from attrfit.training.lr_rules import RULES


def register(sub) -> None:
    p = sub.add_parser("lr-find", help="LR range test: suggest the max learning rate (train side only)")
    p.add_argument("csv", help="labels CSV: an image_path column and one column per attribute")
    p.add_argument("--config", metavar="FILE", help="TOML (or YAML) file of options, as for train; flags override it")
    p.add_argument("--min-lr", type=float, default=1e-6, metavar="LR", help="first LR of the sweep (default 1e-6)")
    p.add_argument("--max-lr", type=float, default=10.0, metavar="LR", help="last LR of the sweep (default 10)")
    p.add_argument("--steps", type=int, default=100, metavar="N", help="training steps per sweep (default 100)")
    p.add_argument("--repeats", type=int, default=3, metavar="N",
                   help="sweeps from the same weights with other batch orders (default 3)")
    p.add_argument("--rule", choices=list(RULES), default="valley", help="which suggestion is chosen (default valley)")
    p.add_argument("--out", default="lr_find", metavar="DIR",
                   help="folder for lr_find.json and lr_find.png (default ./lr_find)")
    p.add_argument("--force", action="store_true", help="replace an existing lr_find.json and lr_find.png in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_flags(p, lr_find=True)  # training-only flags (--lr, --epochs, --report...) are refused
    p.set_defaults(func=run_lr_find)


def run_lr_find(args) -> int:
    out = Path(args.out)
    check_sweep_args(args.min_lr, args.max_lr, args.steps, args.repeats)
    cfg = config_from_args(args)  # every option checked before anything is read or written
    r = attrfit.find_lr(config=cfg, out=out, min_lr=args.min_lr, max_lr=args.max_lr, steps=args.steps,
                        repeats=args.repeats, rule=args.rule, force=args.force, progress=not args.quiet)
    print(describe(r))
    print(f"plot: {out / 'lr_find.png'}  data: {out / 'lr_find.json'}")
    return 0
