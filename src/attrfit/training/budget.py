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
REPORT_S = 10.0  # reserve for writing the report at the end (figures, thumbnails), seconds
# On top of the measured epoch: later epochs run a few % slower than the timed steps (docs/experiments/budget.md).
MARGIN = 1.08
REPLAN_OFF_BY = 1.25  # after the first epoch, plan again when the measured plan is off by this factor or more
SLOW_EPOCHS_TO_CUT = 2  # epochs that must both be slow before a plan is cut (see replan)


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


def shortened(done: int, planned: int, epoch_s: float, left_s: float) -> int | None:
    """The epoch to end at when the ``planned - done`` epochs left, at ``epoch_s`` seconds each, would end
    past the ``left_s`` seconds left to the budget's deadline; None when they fit.

    At least one epoch more: the one-cycle schedule, shortened, anneals over it, so a run is never
    scored at the schedule's peak learning rate, where it is at its noisiest.

    Example:
        >>> shortened(10, 20, 5.0, 60.0), shortened(10, 20, 5.0, 12.0), shortened(10, 20, 5.0, 2.0)
        (None, 12, 11)
        >>> shortened(19, 20, 5.0, 2.0)  # the last epoch: nothing shorter anneals
    """
    left = planned - done
    if left <= 1 or left * epoch_s <= left_s:
        return None
    return done + max(1, math.floor(left_s / (epoch_s * MARGIN)))  # the margin: not one cut per noisy epoch


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
    reserve_s = val_s * (1 + n_test / max(1, len(sides.val_images))) + (REPORT_S if t.cfg.report else 0.0)
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
    t.deadline = started + p.budget_s - p.reserve_s  # the epochs must end by then (see _shorten)
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
    """``--budget``, after an epoch of ``epoch_s`` seconds (training, validation, checkpoints): the first
    epochs' real times correct a plan timed on a few steps (``replan``), and a run late for its deadline
    shortens its schedule. Returns whether to re-plan again after the next epoch."""
    if replan:
        replan = _replan(run, t, epoch_times, epoch_s)
    shortened = _shorten(run, t, prog, epoch_s)
    return replan and not shortened


def _replan(run: Path, t: Trainer, epoch_s: list[float], last_epoch_s: float) -> bool:
    """``--budget``, after each of the first epochs of a new run (``epoch_s`` so far, to which
    ``last_epoch_s`` is added: training, validation and checkpoints): a plan far off the real epoch
    times is redone (:func:`attrfit.training.budget.replan`). Returns whether to check again after
    the next epoch (not after a re-plan, nor after the epochs a cut waits for)."""
    from attrfit.core import runs
    epoch_s.append(last_epoch_s)
    plan = runs.read_json(run / "budget.json") if t.dist.is_main else None
    epochs = replan(plan, epoch_s) if plan is not None else None
    epochs = t.dist.broadcast_object(epochs) if t.dist.enabled else epochs
    if epochs is None:
        return len(epoch_s) < SLOW_EPOCHS_TO_CUT
    if t.dist.is_main:
        log.info("--budget: epochs took %s s where %.2g s was measured: %d epochs instead of %d",
                 ", ".join(f"{s:.2g}" for s in epoch_s), plan["epoch_s"], epochs, t.cfg.epochs)
    _set_epochs(run, t, epochs, replanned(plan, epoch_s, epochs) if plan is not None else None)
    return False


def _shorten(run: Path, t: Trainer, prog: Progress, epoch_s: float) -> bool:
    """``--budget``, a new run, after each epoch (``epoch_s``: training, validation and checkpoints): when
    the epochs left would end past the budget less its reserve (a machine slower than the plan), the
    schedule is shortened to the epochs that fit, so the run still ends annealed and in time. Returns
    whether it was (the first epochs' re-plan then stops: the deadline knows better)."""
    from attrfit.core import runs
    if t.deadline is None:
        return False
    epochs = shortened(prog.epoch, t.cfg.epochs, epoch_s, t.deadline - time.perf_counter())
    epochs = t.dist.broadcast_object(epochs) if t.dist.enabled else epochs  # every rank the same schedule
    if epochs is None:
        return False
    plan = runs.read_json(run / "budget.json") if t.dist.is_main else None
    if t.dist.is_main:
        log.info("--budget: epochs now take %.2g s, so the %d left would end past the budget: the schedule is "
                 "shortened to end after epoch %d (it anneals over the epochs left)", epoch_s,
                 t.cfg.epochs - prog.epoch, epochs)
    short = {**plan, "epochs": epochs, "shortened": {"after_epoch": prog.epoch, "epoch_s": epoch_s,
                                                     "planned_epochs": t.cfg.epochs}} if plan is not None else None
    _set_epochs(run, t, epochs, short)
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
