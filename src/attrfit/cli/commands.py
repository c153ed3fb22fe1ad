"""Subcommands: each ``register_*`` adds its parser; each ``run_*`` is its body.

Handlers parse arguments into library calls and print results; the work lives in the
stage modules. Results go to stdout, progress and logs to stderr.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import attrfit
from attrfit.evaluation.decisions import MOST_PROBABLE, describe
from attrfit.recipe.config import PLAIN_RECIPE
from attrfit.cli.args import (add_config_flags, add_data_args, add_decide_arg, add_device_arg, add_run_arg,
                              add_split_args, add_table_args, add_tta_arg, config_from_args, data_config_from_args,
                              print_json)

log = logging.getLogger("attrfit")


# ---------------------------------------------------------------- demo-data

def register_demo_data(sub) -> None:
    p = sub.add_parser("demo-data", help="write the built-in synthetic person-attributes dataset")
    p.add_argument("out_dir", help="folder to write annotations.csv and resized/N.jpg into")
    p.add_argument("--n", type=int, default=2000, metavar="N", help="number of images (default 2000)")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of the drawn people, their attributes and the label noise (default 0)")
    p.add_argument("--size", default="224x224", metavar="HxW",
                   help="HxW of the written images (default 224x224, as the reference)")
    p.add_argument("--force", action="store_true", help="write over an existing demo dataset, or into a folder holding other files")
    p.set_defaults(func=run_demo_data)


def run_demo_data(args) -> int:
    from attrfit.core import outputs
    from attrfit.data.cache import parse_size
    from attrfit.data.demo import make_demo

    outputs.check_output_folder(args.out_dir, "demo dataset folder", "OUT_DIR")
    t0 = time.perf_counter()
    csv_path = make_demo(args.out_dir, n=args.n, seed=args.seed, size=parse_size(args.size), force=args.force, progress=True)
    print(f"wrote {args.n} images and {csv_path} in {time.perf_counter() - t0:.1f} s")
    return 0


# ---------------------------------------------------------------- split

def register_split(sub) -> None:
    p = sub.add_parser("split", help="make the held-out split once and save it")
    add_table_args(p)
    add_split_args(p)
    p.add_argument("--out", metavar="FILE", help="split file to write (default: <csv stem>.split.json beside the CSV)")
    p.add_argument("--force", action="store_true", help="replace an existing split file")
    p.set_defaults(func=run_split)


def run_split(args) -> int:
    from attrfit.core import outputs
    from attrfit.data.split import default_split_path, make_split, record_duplicates, save_split
    from attrfit.data.table import read_table

    out = Path(args.out) if args.out else default_split_path(Path(args.csv))
    reads = outputs.Protected([Path(args.csv)], [Path(args.images or Path(args.csv).parent)])
    outputs.check_output(out, True, reads, what="split file")  # save_split says what replacing a split costs
    table = read_table(args.csv, args.images, args.heads, args.ignore_columns, args.group_column)
    split = make_split(table, args.test_fraction, args.val_fraction, args.split_seed, args.stratify)
    split = record_duplicates(split, table)
    path = save_split(split, out, force=args.force)
    print(describe_split(split, table))
    print(f"saved {path}")
    return 0


def describe_split(split, table) -> str:
    """``split``: an :class:`attrfit.data.split.Split`; ``table`` the table it was verified against."""
    c = split.counts
    n = sum(c.values())
    group = f", grouped by '{split.group_column}'" if split.group_column else ""
    lines = [
        f"{n} rows, heads: {', '.join(table.schema.heads)}",
        f"train {c['train']} ({c['train'] / n:.1%}), val {c['val']} ({c['val'] / n:.1%}), "
        f"test {c['test']} ({c['test'] / n:.1%}); seed {split.seed}{group}, "
        + (f"stratified by '{split.stratify}'" if split.stratify != "none" else "not stratified"),
        f"fingerprint {split.fingerprint[:16]}",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- prepare

def register_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="check the table, make/verify the split and build the image cache")
    add_data_args(p)
    p.set_defaults(func=run_prepare)


def run_prepare(args) -> int:
    from attrfit.data.load import load_data

    t0 = time.perf_counter()
    data = load_data(data_config_from_args(args))
    dt = time.perf_counter() - t0
    print(describe_split(data.split, data.table))
    print(f"images {tuple(data.images.shape)} uint8 ready in {dt:.1f} s")
    print(label_summary(data))
    return 0


LISTED_CLASSES = 20  # classes named per head; a 500-class column would otherwise print one enormous line


def label_summary(data) -> str:
    """Per head: classes with counts on the train side, missing labels, majority rate."""
    lines = []
    train = data.labels[data.sides["train"]]
    for j, h in enumerate(data.schema.heads):
        col = train[:, j]
        labelled = col[col >= 0]
        counts = [(int((labelled == k).sum()), c) for k, c in enumerate(data.schema.classes[h])]
        top = max(counts)[0] / max(1, len(labelled))
        missing = int((col < 0).sum())
        shown = sorted(counts, key=lambda nc: -nc[0])[:LISTED_CLASSES] if len(counts) > LISTED_CLASSES else counts
        more = f", … and {len(counts) - len(shown)} more classes" if len(shown) < len(counts) else ""
        desc = ", ".join(f"{c} {n}" for n, c in shown) + more
        lines.append(f"  {h}: {desc}; missing {missing}; majority {top:.3f}")
    return "train side labels:\n" + "\n".join(lines)


# ---------------------------------------------------------------- train

def register_train(sub) -> None:
    p = sub.add_parser("train", help="train a model; evaluates the best epoch on the held-out test side at the end")
    p.add_argument("csv", nargs="?", help="labels CSV (not needed with --resume)")
    p.add_argument("--config", metavar="FILE", help="TOML (or YAML) file of options; flags override it")
    p.add_argument("--run-dir", metavar="DIR", help="new run folder (default runs/<time>-<csv name>); never overwritten")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run where it stopped")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_flags(p)
    p.set_defaults(func=run_train)


def run_train(args) -> int:
    from attrfit.core.errors import AttrfitError

    if args.resume:
        if args.csv or any(k.startswith("cfg__") and v is not None for k, v in vars(args).items()):
            raise AttrfitError("--resume takes the data, split and options from the run folder; give nothing else")
        run = attrfit.train(resume=args.resume, progress=not args.quiet)
    else:
        cfg = config_from_args(args)
        if not cfg.data.csv:
            raise AttrfitError("give the labels CSV (or --resume RUN)")
        run = attrfit.train(config=cfg, run_dir=args.run_dir, progress=not args.quiet)
    print_results(run)
    return 0


def print_results(run: Path) -> None:
    """The held-out test table of a finished run, then where to find the rest (rank 0 only under torchrun)."""
    import os

    from attrfit.evaluation.results import Results
    from attrfit.evaluation.scoring import format_table

    if os.environ.get("RANK", "0") != "0":
        return

    results = Results.from_json(json.loads((run / "results.json").read_text()), str(run / "results.json"))
    decisions = run_decisions(run)
    if decisions is not None and results.rules:
        results = results.under(decisions.rule)  # the run's own rule, from its --objective
    title = (f"held-out test side, best epoch {results.best_epoch} by {results.monitor}, "
             f"{describe(results.decision or MOST_PROBABLE, decisions)} "
             "(majority = always guessing the train side's most common class):")
    print(format_table(results, title))
    print(f"run folder: {run}")
    if (run / "report.html").exists():
        print(f"report: {run / 'report.html'} (open it in any browser)")


def run_decisions(run: str | Path):
    """The decision rules saved for ``run``'s checkpoint (a run folder: its best.pt), or None."""
    from attrfit.evaluation.decisions import Decisions
    from attrfit.model import checkpoint

    path = checkpoint.resolve(run)
    return Decisions.for_checkpoint(path, checkpoint.Checkpoint.load(path))


# ---------------------------------------------------------------- evaluate

def register_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score a checkpoint on a side of its split (test by default)")
    add_run_arg(p)
    p.add_argument("--side", choices=["test", "val", "train"], default="test", help="which side of the split (default test)")
    add_tta_arg(p)
    add_decide_arg(p)
    p.add_argument("--json", action="store_true", help="print only JSON on stdout")
    p.add_argument("--csv", dest="csv_override", metavar="CSV", help="evaluate on this CSV's rows of the split instead (same schema)")
    add_device_arg(p, "auto")
    p.set_defaults(func=run_evaluate)


def run_evaluate(args) -> int:
    from attrfit.evaluation.scoring import format_table

    results = attrfit.evaluate(args.run, side=args.side, tta=args.tta, csv=args.csv_override,
                               device=args.device, progress=not args.json, decide=args.decide)
    if args.json:
        print_json(results.to_json())
    else:
        tta = ", mirror TTA" if results.tta else ""
        decisions = run_decisions(args.run) if results.decision else None
        title = (f"{args.side} side, {results.checkpoint} (epoch {results.epoch}{tta}), "
                 f"{describe(results.decision or MOST_PROBABLE, decisions)}")
        print(format_table(results, title))
    return 0


# ---------------------------------------------------------------- demo

def register_demo(sub) -> None:
    p = sub.add_parser("demo", help="the whole job on built-in synthetic data: data, split, train, test, report")
    p.add_argument("--out", default="demo", metavar="DIR", help="folder for the demo data and runs (default ./demo)")
    p.add_argument("--n", type=int, default=4000, metavar="N", help="demo images (default 4000)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_flags(p)
    p.set_defaults(func=run_demo)


# The demo's run: the plain recipe, long and large enough that every drawn head clears its baseline in a few
# minutes on 2 CPU cores (the README's table and the command that makes it).
DEMO_DEFAULTS = {**PLAIN_RECIPE, "epochs": 40, "size": "128x128", "lr": 0.4, "cutout": 0.25, "batch_size": 64}


def run_demo(args) -> int:
    from attrfit.recipe.config import TrainConfig, apply
    from attrfit.data.demo import make_demo
    from attrfit.training.loop import fit

    from attrfit.core import outputs

    out = outputs.check_output_folder(args.out, "demo folder")
    csv_path = out / "data" / "annotations.csv"
    flags = {k[5:]: v for k, v in vars(args).items() if k.startswith("cfg__") and v is not None}
    # options first: a bad one must not cost the minute of writing the demo images
    cfg = apply(TrainConfig(), {**DEMO_DEFAULTS, **flags, "data.csv": str(csv_path)}, source="command line")
    if not csv_path.exists():
        log.info("writing %d demo images to %s", args.n, csv_path.parent)
        make_demo(csv_path.parent, n=args.n, progress=not args.quiet)
    run = fit(cfg, run_dir=out / "runs" / time.strftime("%Y%m%d-%H%M%S"), progress=not args.quiet)
    print_results(run)
    return 0


REGISTRY = [register_demo_data, register_split, register_prepare, register_train, register_evaluate, register_demo]
