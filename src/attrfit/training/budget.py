"""``--budget DURATION``: the number of epochs that fits a wall-time budget, measured on this machine.

People think in wall time ("what can I get by lunch?"). At the start of a new run the
trainer's first steps and one validation pass are timed (everything a step changes is put
back afterwards: :func:`attrfit.training.sandbox.leaves_no_trace`), and the run gets the
whole epochs that fit what is left of the budget once the time already spent (reading
the data, building the cache, an LR range test) and a reserve for the end of the run (the
decision rules fitted on the val side, the test scoring, the report) are taken off. The plan is written to ``RUN/budget.json`` and its epochs into
``RUN/config.json``, so a resumed run keeps it (and its one-cycle schedule) exactly.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from attrfit.core.options import parse_duration
from attrfit.evaluation.scoring import evaluate_images
from attrfit.model.checkpoint import Progress, save
from attrfit.recipe.config import TrainConfig, to_dict
from attrfit.training.distributed import Dist
from attrfit.training.sandbox import leaves_no_trace, train_batches
from attrfit.training.trainer import Trainer, steps_per_epoch, train_step
from attrfit.training.sides import Sides

log = logging.getLogger(__name__)

TIMED_STEPS = 5  # after one untimed warm-up step
# Reserve for writing the report at the end (figures, thumbnails per head), seconds: the end of 15-minute
# PETA runs took 7-8 s with 8 heads and 10-21 s with 35 (docs/experiments/budget.md).
REPORT_S = 6.0
REPORT_PER_HEAD_S = 0.3
# On top of the measured epoch: later epochs run a few % slower than the timed steps (docs/experiments/budget.md).
MARGIN = 1.08
REPLAN_OFF_BY = 1.25  # after the first epoch, plan again when the measured plan is off by this factor or more
SLOW_EPOCHS_TO_CUT = 2  # epochs that must both be slow before a plan is cut (see replan)
PACE_EPOCHS = 3  # a machine slowed down shows in the median of the last this many epochs (see pace)
# A run ahead of its deadline is lengthened only in the first 60% of its schedule (later the LR has annealed
# far and would climb back), and only by 10% of its epochs or more, at least 2: with 5% and the median of the
# last 3 epochs as the pace, a 60-minute run on a noisy machine changed its schedule 19 times in 21 minutes
# (docs/experiments/budget.md).
LENGTHEN_UNTIL = 0.6
LENGTHEN_AT_LEAST = 0.10


@dataclass
class BudgetPlan:
    """What ``--budget`` decided, and from what (seconds); written to ``RUN/budget.json``."""

    budget_s: float
    spent_s: float  # before training: data, cache, LR range test, this measurement
    step_s: float
    val_s: float
    save_s: float  # writing a checkpoint: last.pt every epoch, best.pt whenever val improves (most epochs early)
    steps_per_epoch: int
    epoch_s: float  # (steps x step_s + val_s + 2 x save_s) x MARGIN
    reserve_s: float  # the end: fitting the decision rules on val, the test scoring and the report
    epochs: int

    @property
    def planned_s(self) -> float:
        return self.spent_s + self.epochs * self.epoch_s + self.reserve_s

    def to_dict(self) -> dict:
        return {**asdict(self), "planned_s": self.planned_s}


def epochs_within(budget_s: float, spent_s: float, epoch_s: float, reserve_s: float) -> int:
    """Whole epochs that fit what is left of the budget; at least 1 (a run always trains).

    Example:
        >>> epochs_within(900, 60, 40, 20), epochs_within(60, 50, 40, 20)
        (20, 1)
    """
    return max(1, math.floor((budget_s - spent_s - reserve_s) / epoch_s))


def time_steps(t: Trainer, sides: Sides, steps: int = TIMED_STEPS) -> tuple[float, float]:
    """(seconds per training step, seconds per validation pass), leaving no trace on the trainer."""
    bs = t.cfg.batch_size // t.dist.world_size
    batches = train_batches(sides, bs, t.cfg.seed, steps + 1, t.dist)
    with leaves_no_trace(t):
        for i, (x, y) in enumerate(batches):
            if i == 1:  # the first step warms up kernels and allocators
                _sync(t.device)
                start = time.perf_counter()
            train_step(t, x.to(t.device), y.to(t.device), i, 0.0, t.cfg.optim.momentum)
        _sync(t.device)
        step_s = (time.perf_counter() - start) / steps
        start = time.perf_counter()
        evaluate_images(t.ema if t.ema is not None else t.model, sides.val_images, sides.val_labels,
                        sides.train_labels, t.schema, t.device, t.precision, t.cfg.eval_batch_size, tta=t.cfg.tta)
        val_s = time.perf_counter() - start
    return step_s, val_s


def replan(plan: dict, epoch_s: list[float]) -> int | None:
    """The epochs again, from the first epochs' real times (training, validation, checkpoints); None where the
    plan holds.

    A few timed steps can mislead: another process loading the machine for those seconds (a
    2-core CPU shared with anything slows 10x), or kernels not yet warm. Whole epochs are the
    better measurement of a plan far off; a plan off by :data:`REPLAN_OFF_BY` or more either way
    is redone from the faster of them, with the same budget, time spent before training and
    reserve. A plan a little off is kept. One epoch is not a reliable measure either (a busy
    machine can slow one epoch by half), so a plan that one slow epoch would cut waits for the
    second (:data:`SLOW_EPOCHS_TO_CUT`):
    the machine's noise then costs nothing, and a machine really slower cuts the plan an epoch later.
    Plans of 3 epochs or fewer are cut at once (there is no later epoch to wait for).

    Example:
        >>> p = {"budget_s": 900, "spent_s": 30, "reserve_s": 20, "epochs": 40}
        >>> replan(p, [14.0]), replan(p, [40.0]), replan(p, [40.0, 20.5]), replan(p, [40.0, 38.0])
        (56, None, None, 20)
    """
    epochs = epochs_within(plan["budget_s"], plan["spent_s"], _real_epoch_s(epoch_s), plan["reserve_s"])
    off = max(epochs, plan["epochs"]) / min(epochs, plan["epochs"])
    if off < REPLAN_OFF_BY:
        return None
    if epochs < plan["epochs"] and len(epoch_s) < SLOW_EPOCHS_TO_CUT and plan["epochs"] > SLOW_EPOCHS_TO_CUT + 1:
        return None
    return epochs


def replanned(plan: dict, epoch_s: list[float], epochs: int) -> dict:
    """``plan`` (budget.json) after :func:`replan` chose ``epochs`` from the real ``epoch_s``, and why."""
    planned_s = plan["spent_s"] + epochs * _real_epoch_s(epoch_s) + plan["reserve_s"]
    return {**plan, "epochs": epochs, "planned_s": planned_s, "replanned": {
        "after_epoch": len(epoch_s), "first_epoch_s": epoch_s[0], "epoch_s": epoch_s, "measured_epochs": plan["epochs"]}}


def pace(epoch_s: list[float]) -> float:
    """Seconds per epoch to count with for the epochs left: the mean of the epochs so far (the machine's
    noise averages out, and a slow epoch costs its real time), or the median of the last :data:`PACE_EPOCHS`
    where that is slower (a machine that has slowed down, seen within two epochs).

    Example:
        >>> pace([20.0]), pace([15.0] * 9 + [24.0]), pace([15.0] * 8 + [24.0, 23.0])
        (20.0, 15.9, 23.0)
    """
    return max(statistics.fmean(epoch_s), statistics.median(epoch_s[-PACE_EPOCHS:]))


def refit(done: int, planned: int, pace_s: float, left_s: float) -> int | None:
    """The epoch to end at when the ``planned - done`` epochs left, at ``pace_s`` seconds each, no longer suit
    the ``left_s`` seconds left to the budget's deadline; None when they do.

    Late (they would end past the deadline): cut to the epochs that fit with the margin, at least one more,
    over which the shortened one-cycle schedule anneals, so a run is never scored at the schedule's peak
    learning rate, where it is at its noisiest. Early (in the first :data:`LENGTHEN_UNTIL` of the schedule,
    with at least :data:`LENGTHEN_AT_LEAST` of its epochs, 2 or more, to spare): lengthened to the epochs
    that fit with the margin, so a machine faster than planned does not leave the budget unused.

    Example:
        >>> refit(10, 20, 5.0, 60.0), refit(10, 20, 5.0, 12.0), refit(10, 20, 5.0, 2.0)
        (None, 12, 11)
        >>> refit(19, 20, 5.0, 2.0)  # the last epoch: nothing shorter anneals
        >>> refit(10, 20, 5.0, 80.0)  # 14 more fit with the margin where 10 were planned
        24
        >>> refit(15, 20, 5.0, 80.0)  # past 60% of the schedule: kept
    """
    left = planned - done
    fit = math.floor(left_s / (pace_s * MARGIN))  # the margin: not one cut per noisy epoch
    if left > 1 and left * pace_s > left_s:
        return done + max(1, fit)
    if done < LENGTHEN_UNTIL * planned and fit - left >= max(2, math.ceil(LENGTHEN_AT_LEAST * planned)):
        return done + fit
    return None


def _real_epoch_s(epoch_s: list[float]) -> float:
    """The epoch time a re-plan counts with: the faster of the real epochs, with the margin."""
    return min(epoch_s) * MARGIN


def time_checkpoint(t: Trainer, folder: Path) -> float:
    """Seconds to write an epoch's checkpoint (weights and optimizer state) into ``folder``, the run's.

    Small beside a PETA epoch (milliseconds against seconds); it counts where the disk is slow, the
    model large or the epochs tiny (2.5 ms of a 24 ms epoch of 120 images at 32x32). Only rank 0
    writes checkpoints, and only its plan is used: the other ranks write nothing here.
    """
    if not t.dist.is_main:
        return 0.0
    path = folder / ".budget-timing.pt"
    start = time.perf_counter()
    try:
        save({"model": t.model.state_dict(), "optimizer": t.optimizer.state_dict()}, path)
    finally:
        path.unlink(missing_ok=True)
    return time.perf_counter() - start


def plan(t: Trainer, sides: Sides, n_test: int, started: float, dist: Dist, run: Path) -> BudgetPlan:
    """Measure, then choose the epochs; every rank gets rank 0's plan (the same schedule everywhere)."""
    budget_s = parse_duration(t.cfg.budget)
    step_s, val_s = time_steps(t, sides)
    save_s = time_checkpoint(t, run)
    n_steps = steps_per_epoch(len(sides.train_images) // dist.world_size, t.cfg.batch_size // dist.world_size)
    epoch_s = (n_steps * step_s + val_s + 2 * save_s) * MARGIN
    # the end of a run: a val pass to fit the decision rules, the test side's (at the val pass's speed), the report
    report_s = REPORT_S + REPORT_PER_HEAD_S * len(t.schema.heads) if t.cfg.report else 0.0
    reserve_s = val_s * (1 + n_test / max(1, len(sides.val_images))) + report_s
    spent_s = time.perf_counter() - started
    epochs = epochs_within(budget_s, spent_s, epoch_s, reserve_s)
    p = BudgetPlan(budget_s, spent_s, step_s, val_s, save_s, n_steps, epoch_s, reserve_s, epochs)
    return dist.broadcast_object(p) if dist.enabled else p


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- in the run: plan, keep to it, say how it went

def start(run: Path, t: Trainer, sides: Sides, n_test: int, started: float, dist: Dist) -> TrainConfig:
    """``--budget``: measure, set the epochs (and so the schedule's length), record the plan; return the config."""
    from attrfit.core import runs
    p = plan(t, sides, n_test, started, dist, run)
    t.deadline = started + p.budget_s - p.reserve_s  # the epochs must end by then (see _refit)
    t.total_steps = p.epochs * p.steps_per_epoch
    t.cfg = dataclasses.replace(t.cfg, epochs=p.epochs)
    if dist.is_main:
        runs.write_json(run / "budget.json", p.to_dict())
    log.info("--budget %s: %d epochs of %.2g s each (measured); %.0f s spent before training, %.0f s kept for "
             "the test scoring and report: planned to end after %.0f s", t.cfg.budget, p.epochs, p.epoch_s,
             p.spent_s, p.reserve_s, p.planned_s)
    if p.planned_s > p.budget_s:
        log.warning("--budget %s is less than this run needs at the least (%.0f s already spent, %.2g s for one "
                    "epoch, %.0f s kept for the test scoring and report): it trains 1 epoch and takes about %.0f s",
                    t.cfg.budget, p.spent_s, p.epoch_s, p.reserve_s, p.planned_s)
    return t.cfg


def keep_to(run: Path, t: Trainer, prog: Progress, epoch_times: list[float], epoch_s: float,
            replan: bool) -> bool:
    """``--budget``, after an epoch of ``epoch_s`` seconds (training, validation, checkpoints; added to
    ``epoch_times``): the first epochs' real times correct a plan timed on a few steps (``replan``), and
    then the pace of the last epochs fits the schedule to the deadline, shorter or longer (:func:`refit`).
    Returns whether to re-plan again after the next epoch."""
    epoch_times.append(epoch_s)
    replanned = replan and _replan(run, t, epoch_times)
    refitted = not replanned and _refit(run, t, prog, epoch_times)
    return replan and not (replanned or refitted) and len(epoch_times) < SLOW_EPOCHS_TO_CUT


def _replan(run: Path, t: Trainer, epoch_s: list[float]) -> bool:
    """``--budget``, after each of the first epochs of a new run (``epoch_s`` so far: training, validation and
    checkpoints): a plan far off the real epoch times is redone (:func:`attrfit.training.budget.replan`).
    Returns whether it was."""
    from attrfit.core import runs
    plan = runs.read_json(run / "budget.json") if t.dist.is_main else None
    epochs = replan(plan, epoch_s) if plan is not None else None
    epochs = t.dist.broadcast_object(epochs) if t.dist.enabled else epochs
    if epochs is None:
        return False
    if t.dist.is_main:
        log.info("--budget: epochs took %s s where %.2g s was measured: %d epochs instead of %d",
                 ", ".join(f"{s:.2g}" for s in epoch_s), plan["epoch_s"], epochs, t.cfg.epochs)
    _set_epochs(run, t, epochs, replanned(plan, epoch_s, epochs) if plan is not None else None)
    return True


def _refit(run: Path, t: Trainer, prog: Progress, epoch_s: list[float]) -> bool:
    """``--budget``, a new run, after each epoch (``epoch_s`` so far): when the epochs left, at the pace of the
    last ones, would end past the budget less its reserve (a machine slower than the plan), the schedule
    is shortened to the epochs that fit, so the run still ends annealed and in time; when far more fit (a
    machine faster than the plan), early in the schedule, it is lengthened to them. Returns whether the
    schedule changed (the first epochs' re-plan then stops: the deadline knows better)."""
    from attrfit.core import runs
    if t.deadline is None:
        return False
    pace_s = pace(epoch_s)
    epochs = refit(prog.epoch, t.cfg.epochs, pace_s, t.deadline - time.perf_counter())
    epochs = t.dist.broadcast_object(epochs) if t.dist.enabled else epochs  # every rank the same schedule
    if epochs is None:
        return False
    plan = runs.read_json(run / "budget.json") if t.dist.is_main else None
    change = "shortened" if epochs < t.cfg.epochs else "lengthened"
    if t.dist.is_main and change == "shortened":
        log.info("--budget: epochs now take %.2g s, so the %d left would end past the budget: the schedule is "
                 "shortened to end after epoch %d (it anneals over the epochs left)", pace_s,
                 t.cfg.epochs - prog.epoch, epochs)
    elif t.dist.is_main:
        log.info("--budget: epochs now take %.2g s, so %d more than the %d left fit the budget: the schedule is "
                 "lengthened to end after epoch %d", pace_s, epochs - t.cfg.epochs, t.cfg.epochs - prog.epoch, epochs)
    record = {**plan, "epochs": epochs, change: {"after_epoch": prog.epoch, "epoch_s": pace_s,
                                                 "planned_epochs": t.cfg.epochs}} if plan is not None else None
    _set_epochs(run, t, epochs, record)
    return True


def _set_epochs(run: Path, t: Trainer, epochs: int, plan: dict | None) -> None:
    """A new length for the run's schedule, recorded in budget.json and config.json (so a resume keeps it)."""
    from attrfit.core import runs

    per_epoch = t.total_steps // t.cfg.epochs
    t.total_steps, t.cfg = epochs * per_epoch, dataclasses.replace(t.cfg, epochs=epochs)
    if t.dist.is_main:
        runs.write_json(run / "budget.json", plan)
        runs.write_json(run / "config.json", to_dict(t.cfg))


def outcome(run: Path, took_s: float) -> None:
    """How close the run landed to its budget: logged, and added to ``RUN/budget.json``."""
    from attrfit.core import runs

    p = runs.read_json(run / "budget.json")
    runs.write_json(run / "budget.json", {**p, "took_s": took_s})
    log.info("--budget: the run took %.0f s of %.0f s (%.0f%%)", took_s, p["budget_s"], 100 * took_s / p["budget_s"])
