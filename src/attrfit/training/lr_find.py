"""Stage 6: the LR range test, which picks the max learning rate of the one-cycle schedule.

Method (L. N. Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017;
popularised by fastai's ``lr_find``): train on the train side only, with the real
augmentations, batch size, weight decay and momentum, for ``steps`` optimizer steps
while the LR rises exponentially from ``min_lr`` to ``max_lr``; record each batch's
loss. The loss stays flat while the LR is too small to matter, falls once it is large
enough, bottoms out (the "floor") and blows up once the LR is too large. The sweep
stops early once the smoothed loss exceeds ``diverge`` times its best.

The raw batch losses are noisy, so they are smoothed (:func:`smooth`, an EMA with bias
correction, memory 5% of the sweep: :func:`smoothing_beta`) and the rules read the
smoothed curve. The rules are pure functions ``(lrs, smoothed_losses) -> lr``; all
ignore the first ``SKIP_START`` of the curve (the EMA has averaged few batches there
and an early spike dominates it), and the first three read the descent on its running
minimum, which a spike or an upward wiggle never moves:

    valley      two-thirds of the way down the descent to the floor (the default choice)
    steepest    where the loss falls fastest per decade of LR
    minimum/10  a tenth of the LR at the floor
    blowup/10   a tenth of the LR at which the loss, past the floor, climbs back above
                where it started: training there undoes everything

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

import copy
import io
import logging
import math
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from attrfit.core import files
from attrfit.recipe.config import TrainConfig
from attrfit.training.distributed import Dist
from attrfit.core.errors import AttrfitError
from attrfit.core.progress import progress_bar
from attrfit.data.table import Schema
from attrfit.training.trainer import (Sides, Trainer, build_trainer, epoch_order, init_weights_from, steps_per_epoch,
                                      train_step)

log = logging.getLogger(__name__)

SMOOTH_MEMORY = 0.05  # EMA memory of the smoothed loss, as a fraction of the sweep's steps (see smoothing_beta)
DIVERGE = 4.0  # stop once the smoothed loss exceeds this multiple of its best
SKIP_START = 0.1  # fraction of the recorded points at the low-LR end that the rules ignore
VALLEY_FRACTION = 2 / 3  # valley: where this share of the fall to the floor has happened
MIN_POINTS = 8  # fewer recorded points than this cannot be read
WIDE_SPREAD_DECADES = 0.5  # repeats disagreeing by more than this (a factor ~3) is "wide"
ONECYCLE_RULE = "blowup/10"  # the suggestion used as the one-cycle max LR (see the module docstring)

# `attrfit train --lr auto`: start a decade higher than lr-find's default (nothing happens
# below 1e-5 with SGD from scratch), same top and length.
AUTO_MIN_LR, AUTO_MAX_LR, AUTO_STEPS, AUTO_REPEATS = 1e-5, 10.0, 100, 3


# ---------------------------------------------------------------- smoothing and suggestion rules (pure)

def smooth(losses, beta: float = 0.98) -> np.ndarray:
    """EMA of ``losses`` with bias correction: ``s_k = a_k / (1 - beta^(k+1))``, ``a_k = beta a_(k-1) + (1-beta) x_k``.

    Without the correction the first values would be pulled towards 0 (``a_(-1) = 0``);
    with it, ``s_0 = x_0`` and a constant curve stays constant.

    Example:
        >>> bool(np.allclose(smooth([2.0] * 50), 2.0))
        True
        >>> smooth([1.0, 3.0], beta=0.5).tolist()  # (0.5*0.5 + 0.5*3) / (1 - 0.25)
        [1.0, 2.3333333333333335]
    """
    x = np.asarray(losses, dtype=np.float64)
    out = np.empty_like(x)
    avg = 0.0
    for k, v in enumerate(x):
        avg = beta * avg + (1.0 - beta) * v
        out[k] = avg / (1.0 - beta ** (k + 1))
    return out


def smoothing_beta(steps: int) -> float:
    """EMA decay for a sweep of ``steps`` steps: a memory ``1 / (1 - beta)`` of 5% of the steps.

    An EMA trails a steadily falling curve by about ``beta / (1 - beta)`` steps. fastai's
    0.98 (49 steps) on a 100-step sweep over 7 decades put the smoothed curve 1 to 1.5
    decades to the right of the raw one on the demo data, and every suggestion with it.
    5% of the sweep (beta 0.8 for 100 steps, 0.98 for 1000) trails by 4 steps (0.3
    decade on a 100-step, 7-decade sweep) and still divides the batch-to-batch noise by
    about 3 (``sqrt((1 + beta) / (1 - beta))``).

    Example:
        >>> smoothing_beta(100), smoothing_beta(1000)
        (0.8, 0.98)
    """
    return 1.0 - 1.0 / max(1.0, SMOOTH_MEMORY * steps)


def _read(lrs, losses) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(log10 LR, loss, start, floor) of a recorded curve, cut before its first non-finite loss.

    ``start`` skips the first ``SKIP_START`` of the points (where an EMA has averaged
    few batches and an early spike dominates it); ``floor`` is the index of the lowest
    loss from there on.
    """
    x = np.log10(np.asarray(lrs, dtype=np.float64))
    y = np.asarray(losses, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"lrs and losses must be 1-d and of one length, got {x.shape} and {y.shape}")
    n = int(np.argmin(np.isfinite(y))) if not np.isfinite(y).all() else len(y)
    if n < MIN_POINTS:
        raise AttrfitError(f"the LR range test recorded only {n} usable step(s) (the loss diverged at once?); "
                           "lower --min-lr or raise --steps")
    start = max(1, round(SKIP_START * n))
    return x[:n], y[:n], start, start + int(np.argmin(y[start:n]))


def _descent(lrs, losses) -> tuple[np.ndarray, np.ndarray]:
    """(log10 LR, running minimum of the loss) from the start of the read part to the floor.

    The running minimum is the curve's lower envelope from the left: a spike or an
    upward wiggle never moves it, so the rules that read it see only falls.
    """
    x, y, start, floor = _read(lrs, losses)
    return x[start : floor + 1], np.minimum.accumulate(y[start : floor + 1])


def _blowup_index(y: np.ndarray, start: int, floor: int) -> int | None:
    """First index past the floor where the loss is back above its level at ``start``; None if never."""
    above = np.nonzero(y[floor:] > y[start])[0]
    return floor + int(above[0]) if len(above) else None


def valley(lrs, losses) -> float:
    """LR two-thirds of the way down the descent: where the smoothed loss has made 2/3 of its fall to the floor.

    Pass the smoothed losses. The fall is measured on the running minimum (see
    :func:`_descent`), so a spike's rise and fall before the descent count for nothing.
    With no fall at all it returns the lowest LR read.

    Example:
        >>> lrs = np.logspace(-4, 0, 41)  # flat at 2.0, falls linearly in log LR from 1e-3 to 1e-1, then rises
        >>> losses = np.r_[np.full(10, 2.0), np.linspace(2.0, 0.5, 21)[1:], np.linspace(0.6, 3, 11)]
        >>> round(float(np.log10(valley(lrs, losses))), 1)
        -1.7
    """
    x, env = _descent(lrs, losses)
    fall = env[0] - env[-1]
    if fall <= 0:
        return float(10 ** x[0])
    i = int(np.searchsorted(env[0] - env, VALLEY_FRACTION * fall))  # first point with 2/3 of the fall done
    return float(10 ** x[i])


def steepest(lrs, losses) -> float:
    """LR where the smoothed loss falls fastest per decade of LR, before its floor (pass smoothed losses).

    The slope is the secant over +-``w`` points (``w`` = 2% of the curve, at least 1)
    of the running minimum, so one noisy step or a spike's fall cannot win. With no
    fall at all it returns the lowest LR read.

    Example:
        >>> lrs = np.logspace(-4, 0, 41)
        >>> losses = 1.5 - np.tanh(3 * (np.log10(lrs) + 2))  # steepest at 1e-2
        >>> float(np.log10(steepest(lrs, np.r_[losses[:-5], losses[-6:-1] + 2])))
        -2.0
    """
    x, env = _descent(lrs, losses)
    if len(env) < 3 or env[0] == env[-1]:
        return float(10 ** x[0])
    w = max(1, round(0.02 * len(np.asarray(lrs))))
    i = np.arange(len(env))
    lo, hi = np.maximum(i - w, 0), np.minimum(i + w, len(env) - 1)
    slope = (env[hi] - env[lo]) / (x[hi] - x[lo])
    return float(10 ** x[int(np.argmin(slope))])


def minimum_tenth(lrs, losses) -> float:
    """A tenth of the LR at which the smoothed loss is lowest (pass smoothed losses).

    Example:
        >>> lrs = np.logspace(-4, 0, 41)
        >>> float(minimum_tenth(lrs, (np.log10(lrs) + 1) ** 2))  # lowest at 1e-1
        0.01
    """
    x, _ = _descent(lrs, losses)
    return float(10 ** x[-1] / 10)


def blowup_tenth(lrs, losses) -> float:
    """A tenth of the LR at which the loss blows up (pass smoothed losses).

    "Blows up": past the floor, the loss climbs back above where the read part of the
    curve started, i.e. training at that LR undoes all the progress the sweep made.
    Higher bumps that stay below that level do not count. When the sweep ended before
    that happened, it returns a tenth of the last LR (a lower bound: raise --max-lr).

    Example:
        >>> lrs = np.logspace(-4, 1, 51)  # flat at 2.0, down to 0.5 at 10^-2.1, then up 0.063 a point
        >>> losses = np.r_[np.full(10, 2.0), np.linspace(2.0, 0.5, 11)[1:], np.linspace(0.5, 2.4, 31)]
        >>> round(float(np.log10(blowup_tenth(lrs, losses))), 1)  # above 2.0 from 10^0.4 on
        -0.6
    """
    x, y, start, floor = _read(lrs, losses)
    k = _blowup_index(y, start, floor)
    return float(10 ** x[len(y) - 1 if k is None else k] / 10)


RULES = {"valley": valley, "steepest": steepest, "minimum/10": minimum_tenth, "blowup/10": blowup_tenth}


def geometric_median(values) -> float:
    """Median in log space (the median of the logs, back to LR units)."""
    return float(10 ** np.median(np.log10(np.asarray(values, dtype=np.float64))))


def spread_decades(values) -> float:
    """log10(max / min): 0 when all agree, 1 when they differ by a factor 10."""
    logs = np.log10(np.asarray(values, dtype=np.float64))
    return float(logs.max() - logs.min())


def exponential_lrs(min_lr: float, max_lr: float, steps: int) -> np.ndarray:
    """``steps`` LRs from min_lr to max_lr (both included), equally spaced in log LR."""
    return np.logspace(math.log10(min_lr), math.log10(max_lr), steps)


# ---------------------------------------------------------------- the sweep, leaving no trace

def _rng_state() -> tuple:
    return torch.get_rng_state(), (torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)


def _set_rng_state(state: tuple) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


@contextmanager
def leaves_no_trace(t: Trainer):
    """Restore, on exit (also on an exception), everything a training step changes.

    That is the weights and buffers (BatchNorm running statistics and batch counts),
    optimizer state and hyper-parameters, the EMA weights, the fp16 grad scaler, the
    train/eval mode and the torch RNG (CPU and CUDA; ``train_step`` reseeds it for
    dropout). Snapshots are deep copies: ``state_dict()`` returns live references.
    """
    model = copy.deepcopy(t.model.state_dict())
    optimizer = copy.deepcopy(t.optimizer.state_dict())
    ema = copy.deepcopy(t.ema.state_dict()) if t.ema is not None else None
    scaler = copy.deepcopy(t.scaler.state_dict()) if t.scaler is not None else None
    training, rng = t.model.training, _rng_state()
    try:
        yield
    finally:
        t.model.load_state_dict(model)
        t.optimizer.load_state_dict(optimizer)
        t.optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            t.ema.load_state_dict(ema)
        if scaler is not None:
            t.scaler.load_state_dict(scaler)
        t.model.train(training)
        _set_rng_state(rng)


def peak_momentum(cfg: TrainConfig) -> float:
    """The momentum (SGD) or beta1 (AdamW) the schedule uses at its max LR.

    The range test looks for the max LR, so it runs at the momentum that goes with it:
    one-cycle's lower momentum (``schedule.momentum_min``) there, ``optim.momentum``
    for the other schedules. Momentum multiplies the effective SGD step by
    ``1 / (1 - momentum)``, so a test at the wrong momentum suggests the wrong LR.
    """
    return cfg.schedule.momentum_min if cfg.schedule.kind == "onecycle" else cfg.optim.momentum


def train_batches(sides: Sides, batch_size: int, order_seed: int, steps: int, dist: Dist):
    """Yield ``steps`` (uint8 images, labels) batches of the train side, reshuffled each pass.

    Pass ``p`` uses ``epoch_order(n, order_seed, p)`` (this rank's shard of it), full
    batches only, as the training loop does.
    """
    n, done, epoch = len(sides.train_images), 0, 0
    while True:
        order = dist.shard(epoch_order(n, order_seed, epoch))
        for k in range(steps_per_epoch(len(order), batch_size)):
            if done == steps:
                return
            idx = order[k * batch_size : (k + 1) * batch_size]
            yield sides.train_images[idx], sides.train_labels[idx]
            done += 1
        epoch += 1


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


def check_sweep_args(min_lr: float, max_lr: float, steps: int, repeats: int) -> None:
    if not 0 < min_lr < max_lr < math.inf:
        raise AttrfitError(f"the LR range test needs 0 < min-lr < max-lr (finite), got {min_lr:g} and {max_lr:g}")
    if steps < 2 * MIN_POINTS:
        raise AttrfitError(f"--steps {steps} is too few for a range test; use at least {2 * MIN_POINTS} (100 is usual)")
    if repeats < 1:
        raise AttrfitError(f"--repeats must be at least 1, got {repeats}")


def _hardly_fell(curve: dict) -> bool:
    """True when the smoothed loss never fell 5% below where the rules start reading it."""
    _, y, start, floor = _read(curve["lrs"], curve["smoothed"])
    return bool(y[floor] > 0.95 * y[start])


def _never_blew_up(curve: dict) -> bool:
    _, y, start, floor = _read(curve["lrs"], curve["smoothed"])
    return _blowup_index(y, start, floor) is None


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
    saved_rng = _rng_state()
    try:
        t = build_trainer(cfg, schema, sides, max_lr=1.0, dist=dist)
        if cfg.init_from:  # the run will start from these weights, so the test does too
            init_weights_from(t, cfg.init_from)
        curves = [range_test(t, sides, min_lr, max_lr, steps, order_seed=1000 * cfg.seed + r,
                             show=progress and dist.is_main) for r in range(repeats)]
    finally:
        _set_rng_state(saved_rng)
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
    flat = sum(_hardly_fell(c) for c in result["repeats"])
    if flat:
        out.append(f"the smoothed loss hardly fell (less than 5%) in {flat} of {n} repeat(s): the suggestions "
                   "mean little; check the data and labels, or lower --min-lr")
    tame = sum(_never_blew_up(c) for c in result["repeats"])
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
