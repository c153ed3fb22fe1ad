"""``attrfit audit-labels``: likely wrong labels on the train and val sides (k-fold cross-fitting + cleanlab)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from attrfit.cli.args import add_data_args, data_config_from_args
from attrfit.core.outputs import Protected
from attrfit.recipe.config import TrainConfig, apply, load_file
from attrfit.training.audit import AUDIT_DEFAULTS, audit_labels
from attrfit.training.audit_outputs import check_outputs, summary, write_outputs


def register(sub) -> None:
    p = sub.add_parser("audit-labels", help="find likely wrong labels on the train and val sides (needs cleanlab)")
    add_data_args(p)
    p.add_argument("--config", metavar="FILE",
                   help="TOML (or YAML) file of training options, as for train (its [data] is ignored)")
    p.add_argument("--like", metavar="RUN",
                   help="train each fold with the recipe and the number of epochs of this run (its config.json; "
                        "--config and the flags below still apply over it) instead of the audit's plain recipe")
    p.add_argument("--folds", type=int, default=4, metavar="K", help="k of the k-fold cross-fitting (default 4)")
    p.add_argument("--epochs", type=int, metavar="N",
                   help=f"epochs of each fold's training (default {AUDIT_DEFAULTS['epochs']})")
    p.add_argument("--lr", metavar="LR",
                   help=f"max learning rate of each fold's one-cycle schedule (default {AUDIT_DEFAULTS['lr']})")
    p.add_argument("--batch-size", type=int, metavar="N", help="batch size (default 128)")
    p.add_argument("--precision", metavar="{auto,bf16,fp16,fp32}", help="auto | bf16 | fp16 | fp32 (default auto)")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's)")
    p.add_argument("--out", metavar="FILE", help="suspects CSV to write (default <csv stem>_label_issues.csv here)")
    p.add_argument("--html", metavar="FILE", help="gallery to write (default: the --out name with .html)")
    p.add_argument("--force", action="store_true", help="replace existing output files")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    out_csv = Path(args.out or f"{Path(args.csv).stem}_label_issues.csv")
    out_html = Path(args.html) if args.html else out_csv.with_suffix(".html")
    data_cfg = data_config_from_args(args)
    reads = Protected([Path(args.csv), data_cfg.split_path()], [Path(data_cfg.images or Path(args.csv).parent)])
    check_outputs(out_csv, out_html, args.force, reads)
    flags = {k: v for k, v in {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
                               "precision": args.precision, "threads": args.threads}.items() if v is not None}
    from_file = load_file(args.config) if args.config else {}
    base, defaults = (like_run(args.like), {}) if args.like else (TrainConfig(), AUDIT_DEFAULTS)
    cfg = apply(base, {**defaults, **from_file}, source=args.config or args.like or "audit-labels defaults")
    cfg = dataclasses.replace(apply(cfg, flags, source="command line"), data=data_cfg)
    audit = audit_labels(cfg, args.folds, progress=not args.quiet)
    write_outputs(audit, out_csv, out_html)
    print(summary(audit))
    print(f"suspects: {out_csv}\ngallery: {out_html} (open it in any browser)")
    return 0


def like_run(run: str) -> TrainConfig:
    """The recipe and length of a trained run (its config.json), for each fold: --like RUN."""
    from attrfit.core import runs
    from attrfit.core.errors import AttrfitError
    from attrfit.recipe.config import from_dict

    config = Path(run) / "config.json"
    if not config.is_file():
        raise AttrfitError(f"--like {run}: no config.json there; give a run folder 'attrfit train' wrote")
    cfg = from_dict(runs.read_json(config))
    return dataclasses.replace(cfg, budget=None, init_from=None, report=False, log=())  # its epochs, as trained
