"""Ablation study on PETA: one lever at a time against a baseline, paired on the same test people.

    python bench/ablation.py --csv 35 --epochs 12 --base "--mixup 0 --brightness 0 --contrast 0 --threads 1"
    python bench/ablation.py --csv heads --budget 15m --only base,combo_bc_mixup   # at a wall-time budget
    python bench/ablation.py --csv 35 --quick                             # 200 PETA rows, a smoke run

Every lever is a set of ``attrfit train`` flags (the table ``LEVERS`` below, or ``--lever
NAME="FLAGS"``); ``--patch LEVER`` among them trains through bench/patched_train.py with that lever, one
that is not an option of the tool (``--lever whiten="--patch whiten_stem"``). Each run trains from scratch through the CLI, exactly as a user would, on one
identity-disjoint split (by ``person_id``) and one image cache shared by all runs; then
``attrfit.evaluation.compare.compare_runs`` scores every run's best checkpoint on the same test
images and gives each lever's difference to the baseline with a paired-bootstrap 95% interval.

Runs are compared at the same **compute**: ``--epochs N`` for levers that do not change the cost of
a step, and for one that does (the input size) the lever's own ``--epochs``
is scaled so its compute matches the baseline's (``cost`` in ``LEVERS``: for the input size, the
ratio of pixels). ``--budget D`` instead gives every run the same wall time through ``train
--budget`` (fair only on a quiet machine). A run folder that already holds ``results.json`` is
reused, so an interrupted study continues where it stopped.
"""

from __future__ import annotations

import json
import math
import shlex
import subprocess
import sys
import time
from pathlib import Path

import common

# name -> (flags, step-cost factor vs the baseline's; epochs are divided by it in --epochs mode)
LEVERS: dict[str, tuple[str, float]] = {
    "base": ("", 1.0),
    "label_smoothing_0.1": ("--label-smoothing 0.1", 1.0),
    "ema_0.99": ("--ema 0.99", 1.0),
    "cutout_0.25": ("--cutout 0.25", 1.0),
    "bright_contrast_0.2": ("--brightness 0.2 --contrast 0.2", 1.0),
    "wd_1e-3": ("--weight-decay 1e-3", 1.0),
    "wd_2e-4": ("--weight-decay 2e-4", 1.0),
    "lr_0.4": ("--lr 0.4", 1.0),
    "lr_0.1": ("--lr 0.1", 1.0),
    "batch_256": ("--batch-size 256", 1.0),
    "no_class_weights": ("--no-class-weights", 1.0),
    "size_160x80": ("--size 160x80", 1.56),
    "dropout_0.2": ("--dropout 0.2", 1.0),
    "scale_0.2": ("--scale 0.2", 1.0),
    "mixup_0.2": ("--mixup 0.2", 1.0),
    "cutmix_1": ("--cutmix 1.0", 1.0),
    "tta": ("--tta", 1.0),
    "cw_power_0.5": ("--class-weight-power 0.5", 1.0),
    "combo_bc_mixup": ("--brightness 0.2 --contrast 0.2 --mixup 0.2", 1.0),  # became the default recipe
    "combo_bc_mixup_ema": ("--brightness 0.2 --contrast 0.2 --mixup 0.2 --ema 0.99", 1.0),
}


def parse_args():
    p = common.base_parser(__doc__, "ablation")
    p.add_argument("--csv", choices=sorted(common.PETA_CSVS), default="35")
    p.add_argument("--epochs", type=int, default=12, help="epochs of the baseline (default 12)")
    p.add_argument("--budget", default=None, help="give every run this wall time instead (train --budget)")
    p.add_argument("--base", default="", help="flags every run gets (the baseline recipe)")
    p.add_argument("--only", default=None, help="comma-separated lever names (default: all)")
    p.add_argument("--lever", action="append", default=[], metavar='NAME="FLAGS"', help="an extra lever")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/attrfit-ablation"))
    return p.parse_args()


def train(name: str, flags: str, epochs: int | None, args, csv: Path, work: Path) -> dict:
    """Train one lever through the CLI (skipped when its run already finished); its wall time."""
    run = work / name
    if (run / "results.json").is_file():
        return json.loads((run / "info.json").read_text()) if (run / "info.json").is_file() else {"run": str(run)}
    length = ["--budget", args.budget] if args.budget else ["--epochs", str(epochs)]
    words, patches = without_patches(shlex.split(args.base) + shlex.split(flags))
    tool = ([sys.executable, str(Path(__file__).with_name("patched_train.py")), ",".join(patches), "--"] if patches
            else [sys.executable, "-m", "attrfit"])
    cmd = [*tool, "train", str(csv), "--group-column", "person_id",
           "--split", str(work / "split.json"), "--cache-dir", str(work.parent / "cache"),
           "--size", common.PETA_SIZE, "--run-dir", str(run), "--no-report", "--quiet", *length, *words]
    if args.quick:
        cmd += ["--images", str(common.PETA)]
    if run.exists():  # an unfinished run from an interrupted study: start it again
        subprocess.run(["rm", "-rf", str(run)], check=True)
    t0 = time.perf_counter()
    with open(work / f"{name}.log", "w", encoding="utf-8") as log:  # the run's own output, kept apart
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    shown = ["python", "bench/patched_train.py", *tool[2:]] if patches else ["attrfit"]
    info = {"run": str(run), "flags": flags, "epochs": epochs, "wall_s": round(time.perf_counter() - t0, 1),
            "command": shlex.join([*shown, *cmd[len(tool):]])}
    (run / "info.json").write_text(json.dumps(info, indent=1))
    return info


def without_patches(words: list[str]) -> tuple[list[str], list[str]]:
    """(the ``attrfit train`` flags, the levers of ``--patch LEVER`` among them: bench/patched_train.py's).

    >>> without_patches(["--epochs", "3", "--patch", "alt_flip", "--no-flip"])
    (['--epochs', '3', '--no-flip'], ['alt_flip'])
    """
    patches = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--patch"]
    kept = [w for i, w in enumerate(words) if w != "--patch" and (i == 0 or words[i - 1] != "--patch")]
    return kept, patches


def summarize(comparison, names: list[str], infos: dict[str, dict]) -> list[dict]:
    """One line per lever: its test means and the paired difference to the baseline."""
    rows = {(r.name, r.metric): r for r in comparison.rows}
    out = []
    for i, name in enumerate(names):
        line = {"lever": name, **infos[name], "best_epoch": comparison.runs[i].best_epoch}
        for metric, key in (("balanced_accuracy", "bal"), ("accuracy", "acc")):
            row = rows[("MEAN", metric)]
            line[key] = row.values[i]
            d = row.diffs[i]
            if d is not None:
                line[f"{key}_diff"], line[f"{key}_ci"], line[f"{key}_verdict"] = d.value, d.ci, d.verdict
        out.append(line)
    return out


def table(lines: list[dict]) -> str:
    head = ("| lever | flags | epochs | wall s | best ep | test mean bal acc | diff (95% CI) | "
            "test mean acc | diff (95% CI) |\n|---|---|---|---|---|---|---|---|---|")
    rows = []
    for x in lines:
        def diff(k):
            return "" if f"{k}_diff" not in x else (f"{x[f'{k}_diff']:+.3f} ({x[f'{k}_ci'][0]:+.3f}..{x[f'{k}_ci'][1]:+.3f})"
                                                     f" {x[f'{k}_verdict']}")
        rows.append(f"| {x['lever']} | `{x.get('flags', '')}` | {x.get('epochs') or ''} | {x.get('wall_s', '')} | "
                    f"{x['best_epoch']} | {x['bal']:.3f} | {diff('bal')} | {x['acc']:.3f} | {diff('acc')} |")
    return "\n".join([head, *rows])


def main() -> int:
    args = parse_args()
    from attrfit.evaluation.compare import compare_runs

    if not common.require_peta():
        return 0
    csv = common.peta_csv(args.csv)
    levers = dict(LEVERS)
    for spec in args.lever:
        name, _, flags = spec.partition("=")
        levers[name] = (flags, 1.0)
    names = ["base"] + [n for n in (args.only.split(",") if args.only else levers) if n != "base"]
    work = args.workdir / (args.csv + ("-quick" if args.quick else ""))
    work.mkdir(parents=True, exist_ok=True)
    if args.quick:  # 200 rows, 1 epoch, two levers: the script's plumbing in a minute
        csv = common.subset_csv(csv, work / "subset.csv", 200)
        args.epochs, names = 1, names[:2]
    infos = {}
    for name in names:
        flags, cost = levers[name]
        epochs = None if args.budget else max(1, math.floor(args.epochs / cost + 0.5))
        infos[name] = train(name, flags, epochs, args, csv, work)
        print(f"{name}: {infos[name].get('wall_s')} s", flush=True)
    comparison = compare_runs([work / n for n in names])
    lines = summarize(comparison, names, infos)
    common.report("ablation", args.out, [table(lines)],
                  {"machine": common.machine(common.torch.device("cpu")), "csv": args.csv, "base": args.base,
                   "epochs": args.epochs, "budget": args.budget, "levers": lines})
    return 0


if __name__ == "__main__":
    sys.exit(common.run_main(main))
