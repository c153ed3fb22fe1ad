"""The LR range test, which picks the max learning rate of the one-cycle schedule.

Method (L. N. Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017;
popularised by fastai's ``lr_find``): train on the train side only, with the real
augmentations, batch size, weight decay and momentum, for ``steps`` optimizer steps
while the LR rises exponentially from ``min_lr`` to ``max_lr``; record each batch's
loss. The loss stays flat while the LR is too small to matter, falls once it is large
enough, bottoms out (the "floor") and blows up once the LR is too large. The sweep
stops early once the smoothed loss exceeds ``diverge`` times its best.

The suggestion rules are :mod:`attrfit.training.lr_rules`'s.

The sweep is repeated ``repeats`` times from the same initial weights with different
batch orders and augmentations; each suggestion is the median (in log LR) over the
repeats, and its spread (log10 max/min, in decades) says how far to trust it.

The one-cycle max LR (what ``train --lr auto`` uses) is the blowup/10 suggestion, not
the chosen one. The first three sit in or at the end of the descent, which for a
network trained from scratch lies 2-4 decades below the blow-up; one-cycle's warm-up
(from max_lr / div_factor) lets it peak much closer to the blow-up (Smith & Topin,
"Super-convergence", 2019). On attrfit's demo data and on PETA (cpu-small, batch 128,
one-cycle) the valley said 0.0025-0.005 and blowup/10 0.85. Trained 3 epochs with the
valley as max LR, PETA reached val mean accuracy 0.553 (0.585 at 0.05), against
0.635-0.645 for max LRs from 0.2 to 2; the demo's hand-picked max LR is 0.4.

The range test leaves no trace: :func:`range_test` restores the model weights,
BatchNorm statistics, optimizer state, EMA, grad scaler, train/eval mode and torch
RNG state, bit for bit, also when a step raises.
"""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path

import numpy as np
import torch

from attrfit.core import files, outputs
from attrfit.recipe.config import TrainConfig
from attrfit.training.distributed import Dist
from attrfit.core.errors import AttrfitError
from attrfit.core.progress import progress_bar
from attrfit.data.schema import Schema
from attrfit.training.lr_rules import (MIN_POINTS, RULES, SKIP_START, exponential_lrs, geometric_median, hardly_fell,
                                       never_blew_up, smooth, smoothing_beta, spread_decades)
from attrfit.training.sandbox import leaves_no_trace, rng_state, set_rng_state, train_batches
from attrfit.training.trainer import Trainer, build_trainer, train_step
from attrfit.training.sides import Sides
from attrfit.training.checkpoints import init_weights_from

log = logging.getLogger(__name__)

DIVERGE = 4.0  # stop once the smoothed loss exceeds this multiple of its best
WIDE_SPREAD_DECADES = 0.5  # repeats disagreeing by more than this (a factor ~3) is "wide"
ONECYCLE_RULE = "blowup/10"  # the suggestion used as the one-cycle max LR (see the module docstring)

# `attrfit train --lr auto`: start a decade higher than lr-find's default (nothing happens
# below 1e-5 with SGD from scratch), same top and length.
AUTO_MIN_LR, AUTO_MAX_LR, AUTO_STEPS, AUTO_REPEATS = 1e-5, 10.0, 100, 3


# ---------------------------------------------------------------- the sweep


def peak_momentum(cfg: TrainConfig) -> float:
    """The momentum (SGD) or beta1 (AdamW) the schedule uses at its max LR.

    The range test looks for the max LR, so it runs at the momentum that goes with it:
    one-cycle's lower momentum (``schedule.momentum_min``) there, ``optim.momentum``
    for the other schedules. Momentum multiplies the effective SGD step by
    ``1 / (1 - momentum)``, so a test at the wrong momentum suggests the wrong LR.
    """
    return cfg.schedule.momentum_min if cfg.schedule.kind == "onecycle" else cfg.optim.momentum


def _mean_over_ranks(loss: torch.Tensor, dist: Dist) -> float:
    """The batch loss averaged over ranks, so every rank sees one curve and stops at the same step."""
    if dist.enabled:
        loss = loss.clone()
        torch.distributed.all_reduce(loss)
        loss /= dist.world_size
    return float(loss)


def range_test(t: Trainer, sides: Sides, min_lr: float, max_lr: float, steps: int, order_seed: int,
               diverge: float = DIVERGE, beta: float | None = None, show: bool = False) -> dict:
    """One sweep: ``steps`` training steps with the LR rising exponentially from min_lr to max_lr.

    Batches come from the train side in the order of ``order_seed``; step ``i`` is
    given the step number ``order_seed * steps + i``, so each seed also draws its own
    augmentations and dropout. Stops after the step whose smoothed loss exceeds
    ``diverge`` times the best so far, or before recording a non-finite loss. The trainer
    comes back exactly as it was (:func:`leaves_no_trace`).

    Returns ``{"lrs", "losses", "smoothed", "stop_reason", "order_seed"}``: lists of
    the LR, raw batch loss and smoothed loss of each recorded step; ``stop_reason`` is
    None when the sweep reached max_lr.

    Example:
        >>> curve = range_test(trainer, sides, 1e-5, 10.0, 100, order_seed=0)  # doctest: +SKIP
        >>> valley(curve["lrs"], curve["smoothed"])  # doctest: +SKIP
    """
    schedule = exponential_lrs(min_lr, max_lr, steps)
    beta = smoothing_beta(steps) if beta is None else beta
    momentum = peak_momentum(t.cfg)
    batch_size = t.cfg.batch_size // t.dist.world_size
    lrs: list[float] = []
    losses: list[float] = []
    stop_reason = None
    bar = progress_bar(total=steps, desc=f"LR range test (seed {order_seed})", enabled=show)
    try:
        with leaves_no_trace(t):
            t.model.train()
            for i, (x, y) in enumerate(train_batches(sides, batch_size, order_seed, steps, t.dist)):
                lr = float(schedule[i])
                x, y = x.to(t.device, non_blocking=True), y.to(t.device, non_blocking=True)
                loss, _, _ = train_step(t, x, y, order_seed * steps + i, lr, momentum)
                value = _mean_over_ranks(loss, t.dist)
                bar.update(1)
                if not math.isfinite(value):
                    stop_reason = f"loss became {value} at lr {lr:.3g}"
                    break
                lrs.append(lr)
                losses.append(value)
                smoothed = smooth(losses, beta)
                bar.set_postfix(lr=f"{lr:.2g}", loss=f"{smoothed[-1]:.3f}", refresh=False)
                if smoothed[-1] > diverge * smoothed.min():
                    stop_reason = (f"smoothed loss {smoothed[-1]:.3g} > {diverge:g} x best {smoothed.min():.3g} "
                                   f"at lr {lr:.3g}")
                    break
    finally:
        bar.close()
    return {"order_seed": order_seed, "lrs": lrs, "losses": losses, "smoothed": smooth(losses, beta).tolist(),
            "stop_reason": stop_reason}


# ---------------------------------------------------------------- repeats, summary, files

def summarize(curves: list[dict], rule: str) -> dict:
    """Each rule's suggestion per repeat, their median and spread; the chosen and the one-cycle LR.

    Example:
        >>> lrs = list(np.logspace(-4, 0, 41))
        >>> c = {"lrs": lrs, "smoothed": list(1.5 - np.tanh(3 * (np.log10(lrs) + 2)) + 3 * (np.log10(lrs) > -0.5))}
        >>> s = summarize([c, c], "steepest")
        >>> s["chosen"], s["spread_decades"], round(s["onecycle_max_lr"], 3)
        (0.01, 0.0, 0.04)
    """
    if rule not in RULES:
        raise AttrfitError(f"unknown rule '{rule}'; choose one of {', '.join(RULES)}")
    suggestions = {}
    for name, fn in RULES.items():
        per_repeat = [fn(c["lrs"], c["smoothed"]) for c in curves]
        suggestions[name] = {"median": geometric_median(per_repeat), "spread_decades": spread_decades(per_repeat),
                             "per_repeat": per_repeat}
    chosen, onecycle = suggestions[rule], suggestions[ONECYCLE_RULE]
    return {"rule": rule, "chosen": chosen["median"], "spread_decades": chosen["spread_decades"],
            "spread_wide": chosen["spread_decades"] > WIDE_SPREAD_DECADES,
            "onecycle_rule": ONECYCLE_RULE, "onecycle_max_lr": onecycle["median"],
            "onecycle_spread_decades": onecycle["spread_decades"], "suggestions": suggestions}


def check_out(out: Path, force: bool, data) -> None:
    """Before the sweep: ``out`` may take lr_find.json and lr_find.png (:mod:`attrfit.core.outputs`: never a run's
    folder or an input, no existing file without ``force``); ``data`` is the run's DataConfig (what it reads)."""
    outputs.check_output_folder(out, "LR range test folder")
    files.probe_folder(files.make_folder(out, "LR range test folder"), "LR range test")
    reads = outputs.Protected([Path(data.csv), data.split_path()], [Path(data.images or Path(data.csv).parent)])
    for name in ("lr_find.json", "lr_find.png"):
        outputs.check_output(out / name, force, reads, "LR range test")


def check_sweep_args(min_lr: float, max_lr: float, steps: int, repeats: int) -> None:
    if not 0 < min_lr < max_lr < math.inf:
        raise AttrfitError(f"the LR range test needs 0 < min-lr < max-lr (finite), got {min_lr:g} and {max_lr:g}")
    if steps < 2 * MIN_POINTS:
        raise AttrfitError(f"--steps {steps} is too few for a range test; use at least {2 * MIN_POINTS} (100 is usual)")
    if repeats < 1:
        raise AttrfitError(f"--repeats must be at least 1, got {repeats}")


def find_lr(cfg: TrainConfig, schema: Schema, sides: Sides, out_dir: str | Path | None, min_lr: float = 1e-6,
            max_lr: float = 10.0, steps: int = 100, repeats: int = 3, rule: str = "valley",
            dist: Dist | None = None, progress: bool = False) -> dict:
    """Run the range test ``repeats`` times from the same initial weights; write lr_find.json and lr_find.png.

    The trainer is built once, as ``train`` builds it (same seed, so the same initial
    weights the run will start from, ``init_from`` included); repeat ``r`` shuffles with order seed
    ``1000 * cfg.seed + r``. Only rank 0 writes, and nothing is written when out_dir is
    None. The global torch RNG is left as it was.

    Returns the summary (:func:`summarize`: ``chosen``, ``spread_decades``,
    ``onecycle_max_lr``, ``suggestions`` per rule...) plus ``repeats`` (the curves),
    ``settings`` and ``warnings`` (plain sentences).

    Example:
        >>> r = find_lr(cfg, data.schema, make_sides(data), "lr_find", steps=100, repeats=3)  # doctest: +SKIP
        >>> r["chosen"], r["spread_decades"], r["onecycle_max_lr"]  # doctest: +SKIP
    """
    check_sweep_args(min_lr, max_lr, steps, repeats)
    if rule not in RULES:
        raise AttrfitError(f"unknown rule '{rule}'; choose one of {', '.join(RULES)}")
    dist = dist or Dist()
    saved_rng = rng_state()
    try:
        t = build_trainer(cfg, schema, sides, max_lr=1.0, dist=dist)
        if cfg.init_from:  # the run will start from these weights, so the test does too
            init_weights_from(t, cfg.init_from)
        curves = [range_test(t, sides, min_lr, max_lr, steps, order_seed=1000 * cfg.seed + r,
                             show=progress and dist.is_main) for r in range(repeats)]
    finally:
        set_rng_state(saved_rng)
    result = summarize(curves, rule)
    result["repeats"] = curves
    result["settings"] = {
        "min_lr": min_lr, "max_lr": max_lr, "steps": steps, "repeats": repeats, "beta": smoothing_beta(steps),
        "diverge": DIVERGE, "skip_start": SKIP_START, "momentum": peak_momentum(cfg),
        "optimizer": cfg.optim.optimizer, "weight_decay": cfg.optim.weight_decay, "batch_size": cfg.batch_size,
        "train_images": len(sides.train_images), "device": str(t.device), "precision": t.precision,
    }
    result["warnings"] = _warnings(result)
    if out_dir is not None and dist.is_main:
        write_outputs(result, Path(out_dir))
    return result


def _warnings(result: dict) -> list[str]:
    out = []
    n = len(result["repeats"])
    wide = {result["rule"]: result["spread_decades"], ONECYCLE_RULE: result["onecycle_spread_decades"]}
    for name, spread in wide.items():
        if spread > WIDE_SPREAD_DECADES:
            out.append(f"the {n} repeats disagree: their '{name}' suggestions span {spread:.2f} decades "
                       f"(a factor {10 ** spread:.1f}), so that suggestion is rough. Look at the plot, or raise "
                       "--steps or --batch-size for a steadier curve")
    flat = sum(hardly_fell(c) for c in result["repeats"])
    if flat:
        out.append(f"the smoothed loss hardly fell (less than 5%) in {flat} of {n} repeat(s): the suggestions "
                   "mean little; check the data and labels, or lower --min-lr")
    tame = sum(never_blew_up(c) for c in result["repeats"])
    if tame:
        out.append(f"the loss never blew up by lr {result['settings']['max_lr']:g} in {tame} of {n} repeat(s), so "
                   f"the one-cycle max LR ({ONECYCLE_RULE}) is only a lower bound; raise --max-lr to see more")
    return out


def write_outputs(result: dict, out_dir: Path) -> None:
    from attrfit.core import runs

    files.make_folder(out_dir, "LR range test folder")
    runs.write_json(out_dir / "lr_find.json", result)
    plot(result, out_dir / "lr_find.png")


def auto_lr(cfg: TrainConfig, schema: Schema, sides: Sides, out_dir: str | Path, dist: Dist,
            progress: bool = True) -> float:
    """``train --lr auto``: run the range test (files in out_dir) and return the one-cycle max LR.

    Every rank runs the test (the loss is averaged over ranks, so the curves agree);
    rank 0's answer is broadcast so all ranks train with one LR.
    """
    log.info("lr auto: LR range test, %d steps from %g to %g, %d repeats", AUTO_STEPS, AUTO_MIN_LR, AUTO_MAX_LR,
             AUTO_REPEATS)
    r = find_lr(cfg, schema, sides, out_dir, AUTO_MIN_LR, AUTO_MAX_LR, AUTO_STEPS, AUTO_REPEATS, dist=dist,
                progress=progress)
    lr = float(dist.broadcast_object(r["onecycle_max_lr"]))
    log.info("lr auto: max LR %.3g (%s, median of %d repeats, spread %.2f decades); %s suggests %.3g; plot %s",
             lr, r["onecycle_rule"], AUTO_REPEATS, r["onecycle_spread_decades"], r["rule"], r["chosen"],
             Path(out_dir) / "lr_find.png")
    if cfg.schedule.kind != "onecycle" and cfg.schedule.warmup_steps == 0:
        log.warning("lr auto: the %s schedule starts at its max LR without a warm-up, and the suggestion assumes "
                    "one (it is one-cycle's peak); consider --warmup-steps", cfg.schedule.kind)
    for w in r["warnings"]:
        log.warning("lr auto: %s", w)
    return lr


# ---------------------------------------------------------------- plot

RULE_STYLES = {"valley": ("tab:red", "-"), "steepest": ("tab:green", "--"), "minimum/10": ("tab:purple", ":"),
               "blowup/10": ("black", "-.")}


def plot(result: dict, path: str | Path) -> None:
    """Loss vs LR (log axis): raw (faint) and smoothed loss of each repeat; each rule's median as a
    vertical line, the chosen one bold; the repeats' spread of the chosen and the one-cycle rule shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5), dpi=110)
    colors = ["tab:blue", "tab:orange", "tab:cyan", "tab:olive", "tab:brown", "tab:pink"]  # not the rules' colours
    for r, c in enumerate(result["repeats"]):
        col = colors[r % len(colors)]
        ax.plot(c["lrs"], c["losses"], color=col, alpha=0.25, lw=0.8)
        ax.plot(c["lrs"], c["smoothed"], color=col, lw=1.6, label=f"repeat {r + 1} (smoothed; faint: raw)")
    for name in dict.fromkeys([result["rule"], result["onecycle_rule"]]):
        each = result["suggestions"][name]["per_repeat"]
        ax.axvspan(min(each), max(each), color=RULE_STYLES.get(name, ("k",))[0], alpha=0.12)
    for name, s in result["suggestions"].items():
        color, style = RULE_STYLES.get(name, ("k", "-."))
        chosen = name == result["rule"]
        note = "  <- chosen" if chosen else ""
        note += "  = one-cycle max LR" if name == result["onecycle_rule"] else ""
        ax.axvline(s["median"], color=color, ls=style, lw=2.8 if chosen else 1.3,
                   label=f"{name}: {s['median']:.2g} (spread {s['spread_decades']:.2f} dec.){note}")
    ax.set_xscale("log")
    ax.set_ylim(*_y_range(result["repeats"]))
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss (sum over heads)")
    ax.set_title(f"LR range test, {len(result['repeats'])} repeat(s): chosen {result['chosen']:.2g} "
                 f"({result['rule']}); one-cycle max LR {result['onecycle_max_lr']:.2g} ({result['onecycle_rule']})",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # outside: hides no curve
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    files.write_bytes(path, buf.getvalue(), "the LR range test plot")


def _y_range(curves: list[dict]) -> tuple[float, float]:
    """y limits: from the curves' floor to a little above where the rules start; the blow-up runs off the top."""
    lows, highs = [], []
    for c in curves:
        s = np.asarray(c["smoothed"])
        start = max(1, round(SKIP_START * len(s)))
        lows.append(min(s.min(), np.percentile(c["losses"], 2)))
        highs.append(s[: start + 1].max())
    lo, hi = min(lows), max(highs)
    pad = 0.08 * (hi - lo)
    return lo - pad, hi + 2 * pad


# ---------------------------------------------------------------- what the command prints

def describe(r: dict) -> str:
    """The text ``lr-find`` prints: settings, each rule's suggestion, the chosen and one-cycle LRs, warnings."""
    st = r["settings"]
    lines = [f"LR range test: {st['train_images']} train images, batch {st['batch_size']}, {st['steps']} steps "
             f"from {st['min_lr']:g} to {st['max_lr']:g}, momentum {st['momentum']:g}, {st['repeats']} repeat(s)"]
    for i, c in enumerate(r["repeats"]):
        end = c["stop_reason"] or f"reached lr {st['max_lr']:g}"
        lines.append(f"  repeat {i + 1}: {len(c['lrs'])} steps; {end}")
    lines.append("suggestions (median over repeats; spread = log10(max/min) of the repeats):")
    for name, s in r["suggestions"].items():
        each = ", ".join(f"{v:.2g}" for v in s["per_repeat"])
        mark = "   <- chosen" if name == r["rule"] else ""
        lines.append(f"  {name:<11} {s['median']:9.3g}   spread {s['spread_decades']:.2f} decades  ({each}){mark}")
    lines.append(f"chosen LR {r['chosen']:.3g} ({r['rule']}, spread {r['spread_decades']:.2f} decades)")
    lines.append(f"one-cycle max LR {r['onecycle_max_lr']:.3g} ({r['onecycle_rule']}, spread "
                 f"{r['onecycle_spread_decades']:.2f} decades; what --lr auto uses): "
                 f"attrfit train ... --lr {r['onecycle_max_lr']:.3g}")
    lines += [f"WARNING: {w}" for w in r["warnings"]]
    return "\n".join(lines)
