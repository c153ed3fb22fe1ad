"""Time to accuracy on PETA: train from scratch under a wall-clock budget, score the held-out people.

    python bench/peta_time_to_accuracy.py                      # both CSVs, 15 minutes each
    python bench/peta_time_to_accuracy.py --csv 35 --budget-min 30 --set monitor=mean_balanced_accuracy
    python bench/peta_time_to_accuracy.py --quick              # 200 PETA rows, seconds per CSV

For each of ``peta_heads.csv`` (8 categorical heads) and ``peta35.csv`` (35 binary attributes),
with the data in ../shared/data/peta (read-only; splits, cache and runs go to ``--workdir``):

1. split by ``person_id`` (identity-disjoint: 15% test, 10% val), images at 128x64;
2. train with ``budget`` set (``attrfit train --budget``): the product times the first steps and
   a validation pass and picks the epochs so the whole run, test scoring included, fits;
3. train with :func:`attrfit.training.loop.fit` (default settings, plus any ``--set`` overrides),
   recording the wall time at the end of every epoch (after its validation);
4. report the best checkpoint on the test side: per head accuracy, balanced accuracy and the
   majority-class accuracy, and their means. For peta35 the mean balanced accuracy is the
   field's "mA" (ImageNet-pretrained ResNet50 at 256x192: 71.43 on an identity-disjoint split,
   83.96 on a random image split).

The accuracy-vs-wall-time curve (val mean accuracy and mean balanced accuracy per epoch) goes to
a PNG beside the JSON, so the time to reach a given accuracy can be read off. The budget covers
the whole of ``fit()``: reading the data, the timing, training, validation and the test scoring.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import torch

import common
from attrfit.core import runs
from attrfit.recipe.config import TrainConfig, apply
from attrfit.data.load import DataConfig
from attrfit.training.loop import fit

REFERENCE_MA = {"identity-disjoint": 71.43, "random image split": 83.96}  # ResNet50, ImageNet-pretrained, 256x192


# ---------------------------------------------------------------- the wall time of each epoch

class EpochClock(logging.Handler):
    """Seconds since ``start`` at each of the trainer's "epoch N/M" log lines (logged after validation)."""

    def __init__(self, start: float) -> None:
        super().__init__(logging.INFO)
        self.start, self.times = start, []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, str) and record.msg.startswith("epoch %d/%d"):
            self.times.append(time.perf_counter() - self.start)


def timed_fit(cfg: TrainConfig, run_dir: Path) -> tuple[Path, float, list[float]]:
    """Run :func:`fit`; return the run folder, its total wall time and the time at each epoch's end."""
    logger = logging.getLogger("attrfit.training.loop")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    t0 = time.perf_counter()
    clock = EpochClock(t0)
    logger.addHandler(clock)
    try:
        run = fit(cfg, run_dir=run_dir, progress=False)
    finally:
        logger.removeHandler(clock)
        logger.setLevel(old_level)
    return run, time.perf_counter() - t0, clock.times


def curve(run: Path, epoch_end_s: list[float]) -> list[dict]:
    """Per epoch: wall seconds since fit() started, cumulative training seconds, val means."""
    rows = runs.MetricsLog(run / "metrics.csv").rows()
    points, train_s = [], 0.0
    for i, r in enumerate(rows):
        train_s += float(r["seconds"])
        points.append({
            "epoch": int(r["epoch"]),
            "wall_s": epoch_end_s[i] if i < len(epoch_end_s) else None,
            "train_s": train_s,
            "val_mean_accuracy": float(r["val_mean_accuracy"]),
            "val_mean_balanced_accuracy": float(r["val_mean_balanced_accuracy"]),
            "val_mean_majority_accuracy": float(r["val_mean_majority_accuracy"]),
        })
    return points


def time_to(points: list[dict], key: str, fractions=(0.9, 0.95, 0.99)) -> dict:
    """Wall seconds at which ``key`` first reached each fraction of its best value."""
    best = max(p[key] for p in points)
    out = {}
    for f in fractions:
        hit = next((p for p in points if p[key] >= f * best), None)
        out[f"{f:g}"] = hit["wall_s"] if hit else None
    return out


# ---------------------------------------------------------------- one CSV

def bench_csv(csv: Path, images: str | None, args, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)  # attrfit writes the split file but not its folder
    data = DataConfig(csv=str(csv), images=images, group_column="person_id", size=args.size,
                      split=str(work / f"{csv.stem}.split.json"), cache_dir=str(args.cache_dir or work / "cache"))
    overrides = {"device": args.device, "report": False}
    if args.quick:
        overrides["batch_size"] = 32
    if args.preset:
        overrides["model.preset"] = args.preset
    overrides.update(dict(kv.split("=", 1) for kv in args.set))
    cfg = apply(TrainConfig(data=data), overrides, source="--set")
    budget_s = round(args.budget_min * 60)
    cfg = apply(cfg, {"budget": f"{budget_s}s"})  # the product's own planner: train --budget
    run_dir = work / "runs" / f"{csv.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    run, fit_s, epoch_end_s = timed_fit(cfg, run_dir)
    points = curve(run, epoch_end_s)
    results = runs.read_json(run / "results.json")
    plan = runs.read_json(run / "budget.json")
    return {"csv": str(csv), "run": str(run), "config": overrides, "epochs": len(points),
            "budget_s": budget_s, "budget_plan": plan, "fit_wall_s": fit_s,
            "last_epoch_end_s": points[-1]["wall_s"] if points else None,  # since fit() started
            "curve": points, "time_to_fraction_of_best_val": {
                "mean_accuracy": time_to(points, "val_mean_accuracy"),
                "mean_balanced_accuracy": time_to(points, "val_mean_balanced_accuracy")},
            "test": results}


def tables(name: str, r: dict) -> list[str]:
    test = r["test"]
    head_rows = [[h, m["accuracy"], m["balanced_accuracy"], m["majority_accuracy"], m["n"]]
                 for h, m in test["heads"].items()]
    mean = test["mean"]
    head_rows.append(["**mean**", mean["accuracy"], mean["balanced_accuracy"], mean["majority_accuracy"], ""])
    out = [f"### {Path(r['csv']).name}: test side (identity-disjoint), best epoch {test.get('best_epoch')} "
           f"of {r['epochs']}",
           common.markdown_table(["head", "accuracy", "balanced acc", "majority acc", "n"], head_rows)]
    if name == "35":
        ma = 100 * mean["balanced_accuracy"]
        out.append(f"mA (mean balanced accuracy over the 35 attributes) = {ma:.2f}; ImageNet-pretrained ResNet50 "
                   f"at 256x192: {REFERENCE_MA['identity-disjoint']} identity-disjoint, "
                   f"{REFERENCE_MA['random image split']} random image split")
    plan = r["budget_plan"]
    out.append(common.markdown_table(
        ["epoch", "wall s", "val mean acc", "val mean bal acc", "val majority"],
        [[p["epoch"], p["wall_s"], p["val_mean_accuracy"], p["val_mean_balanced_accuracy"],
          p["val_mean_majority_accuracy"]] for p in r["curve"]]))
    out.append(f"budget {r['budget_s']:.0f} s (train --budget): measured {plan['epoch_s']:.1f} s per epoch "
               f"({plan['step_s']:.3f} s per step, val {plan['val_s']:.1f} s), {plan['spent_s']:.1f} s spent before "
               f"(data, checks), {plan['reserve_s']:.1f} s reserved -> {plan['epochs']} epochs"
               + (f" (shortened from {plan['shortened']['planned_epochs']} after epoch "
                  f"{plan['shortened']['after_epoch']}: the budget's end was near)"
                  if "shortened" in plan else "") + "; the last epoch ended "
               f"{common.fmt(r['last_epoch_end_s'])} s after fit() started, which returned after "
               f"{r['fit_wall_s']:.0f} s ({100 * r['fit_wall_s'] / r['budget_s']:.0f}% of the budget)")
    return out


# ---------------------------------------------------------------- the curve

def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.2), squeeze=False)
    for ax, (name, r) in zip(axes[0], results.items()):
        pts = [p for p in r["curve"] if p["wall_s"] is not None]
        minutes = [p["wall_s"] / 60 for p in pts]
        ax.plot(minutes, [p["val_mean_accuracy"] for p in pts], "o-", label="val mean accuracy")
        ax.plot(minutes, [p["val_mean_balanced_accuracy"] for p in pts], "s-", label="val mean balanced accuracy")
        ax.plot(minutes, [p["val_mean_majority_accuracy"] for p in pts], "--", color="grey",
                label="always the majority class (accuracy)")
        if name == "35":
            ax.axhline(REFERENCE_MA["identity-disjoint"] / 100, color="red", linestyle=":",
                       label="ResNet50 ImageNet-pretrained, 256x192 (test mA)")
        ax.set_title(f"{Path(r['csv']).name}: {r['epochs']} epochs")
        ax.set_xlabel("wall time since fit() started, data loading included (minutes)")
        ax.set_xlim(left=0)
        ax.set_ylabel("validation (identity-disjoint)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- main

def main() -> int:
    p = common.base_parser(__doc__, "peta_time_to_accuracy")
    p.add_argument("--csv", choices=["heads", "35", "both"], default="both", help="which PETA CSV (default both)")
    p.add_argument("--budget-min", type=float, default=15.0,
                   help="wall-clock minutes per CSV, as `attrfit train --budget`: reading the data, training, "
                        "validation and the test scoring (default 15; --quick 0.25)")
    p.add_argument("--size", default=common.PETA_SIZE, help=f"HxW (default {common.PETA_SIZE}; --quick 64x32)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="training config override, e.g. --set optim.class_weights=true (repeatable)")
    p.add_argument("--workdir", type=Path, default=common.RESULTS / "peta", help="splits and runs")
    p.add_argument("--cache-dir", type=Path, default=common.RESULTS / "work" / "cache",
                   help="image cache (default shared with the other benchmarks)")
    p.add_argument("--rows", type=int, default=150, help="--quick: PETA rows used (default 150)")
    args = p.parse_args()
    if not common.require_peta():
        return 0
    common.apply_threads(args.threads)
    bad = [kv for kv in args.set if "=" not in kv]
    if bad:
        p.error(f"--set takes KEY=VALUE, got {bad[0]!r}")
    names = ["heads", "35"] if args.csv == "both" else [args.csv]
    with tempfile.TemporaryDirectory(prefix="attrfit-bench-") as tmp:
        if args.quick:  # a subset CSV in a temp folder; image paths stay relative to PETA
            work = Path(tmp)
            args.size, args.cache_dir = "64x32", None
            args.budget_min = min(args.budget_min, 0.25)
            csvs = {n: common.subset_csv(common.peta_csv(n), work / common.PETA_CSVS[n], args.rows) for n in names}
            images = str(common.PETA)
        else:
            work, images = args.workdir, None
            csvs = {n: common.peta_csv(n) for n in names}
        results = {n: bench_csv(csvs[n], images, args, work) for n in names}
    png = args.out.with_suffix(".png")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(results, png)
    out_tables = [t for n in names for t in tables(n, results[n])] + [f"curve: {png}"]
    settings = {"size": args.size, "budget_min_per_csv": args.budget_min, "set": args.set, "quick": args.quick,
                "group_column": "person_id", "test_fraction": 0.15, "val_fraction": 0.1, "png": str(png)}
    common.report("peta_time_to_accuracy", args.out, out_tables,
                  {"machine": common.machine(torch.device(args.device)), "settings": settings,
                   "reference_mA": REFERENCE_MA, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(common.run_main(main))
