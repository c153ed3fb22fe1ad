"""Learning-rate and momentum schedules as pure functions of training progress.

The training loop owns the step counter and asks ``lr_at(step, total_steps, max_lr, cfg)``
and ``momentum_at(step, total_steps, cfg)`` before each optimizer step; there is no
scheduler object and nothing to checkpoint beyond the step.

Kinds:
    onecycle  cosine warm-up from max_lr / div_factor to max_lr over the first
              pct_start of training, then cosine anneal to
              max_lr / div_factor / final_div_factor at the last step (as torch's
              OneCycleLR with anneal_strategy="cos"); momentum moves the opposite way.
    cosine    linear warm-up over warmup_steps, then cosine from max_lr towards 0.
    linear    linear warm-up, then linear decay from max_lr towards 0.
    constant  linear warm-up, then max_lr.
Steps past the end are clamped to the last step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from attrfit.core.errors import AttrfitError
from attrfit.core.options import OneOf, Range, check_fields, option

SCHEDULES = ("onecycle", "constant", "cosine", "linear")


@dataclass(frozen=True)
class ScheduleConfig:
    """Shape of the learning-rate (and momentum) schedule; max_lr is passed separately.

    Example:
        >>> ScheduleConfig(kind="cosine", warmup_steps=100).kind
        'cosine'
    """

    kind: str = option("onecycle", "LR schedule: onecycle (warm up, then anneal; super-convergence), constant, "
                       "cosine or linear", "{" + ",".join(SCHEDULES) + "}", OneOf(*SCHEDULES), flag="schedule")
    pct_start: float = option(0.25, "onecycle: share of the steps spent warming up to the max LR", "FRAC",
                              Range(0, 1), lr_find=False)
    div_factor: float = option(25.0, "onecycle: the first LR is the max LR / this", "X",
                               Range(1, 1_000_000), lr_find=False)
    final_div_factor: float = option(1e4, "onecycle: the last LR is the first LR / this", "X",
                                     Range(1, 1_000_000_000), lr_find=False)
    warmup_steps: int = option(0, "cosine, linear, constant: steps of linear warm-up to the max LR", "N",
                               Range(0), lr_find=False)
    momentum_max: float = option(0.95, "onecycle: momentum (beta1 for adamw) at the start and the end", "M",
                                 Range(0, 1, hi_open=True), lr_find=False)
    momentum_min: float = option(0.85, "onecycle: momentum at the LR peak (the LR range test uses it too)", "M",
                                 Range(0, 1, hi_open=True))

    def __post_init__(self) -> None:
        check_fields(self, "schedule")
        if self.momentum_min > self.momentum_max:
            raise AttrfitError(f"--momentum-min ({self.momentum_min}) must not exceed --momentum-max "
                               f"({self.momentum_max}); one-cycle lowers momentum as the LR rises")


def _cos_interp(start: float, end: float, frac: float) -> float:
    """Half-cosine from start (frac 0) to end (frac 1); exact at both ends."""
    weight = (1.0 + math.cos(math.pi * frac)) / 2.0
    return start * weight + end * (1.0 - weight)


def _clamp_step(step: int, total_steps: int) -> int:
    if total_steps < 1:
        raise AttrfitError(f"total_steps must be >= 1, got {total_steps}")
    return min(max(step, 0), total_steps - 1)


def _onecycle_phase(step: int, total_steps: int, pct_start: float) -> tuple[bool, float]:
    """(in warm-up?, fraction of that phase done); peak at step pct_start * (total - 1)."""
    last = total_steps - 1
    peak = pct_start * last
    if step < peak:
        return True, step / peak
    return False, (step - peak) / (last - peak) if last > peak else 1.0


def lr_at(step: int, total_steps: int, max_lr: float, cfg: ScheduleConfig) -> float:
    """Learning rate for ``step`` (0-based) of ``total_steps``.

    Example:
        >>> cfg = ScheduleConfig()  # onecycle
        >>> lr_at(0, 101, 1.0, cfg), lr_at(25, 101, 1.0, cfg)
        (0.04, 1.0)
        >>> lr_at(100, 101, 1.0, cfg) == 1.0 / 25 / 1e4
        True
    """
    step = _clamp_step(step, total_steps)
    if cfg.kind == "onecycle":
        start = max_lr / cfg.div_factor
        warming, frac = _onecycle_phase(step, total_steps, cfg.pct_start)
        if warming:
            return _cos_interp(start, max_lr, frac)
        return _cos_interp(max_lr, start / cfg.final_div_factor, frac)
    warmup = cfg.warmup_steps
    if step < warmup:
        return max_lr * (step + 1) / (warmup + 1)
    # Fraction of the decay phase done before this step; the last step stays above 0.
    frac = (step - warmup) / max(total_steps - warmup, 1)
    if cfg.kind == "constant":
        return max_lr
    if cfg.kind == "cosine":
        return _cos_interp(max_lr, 0.0, frac)
    return max_lr * (1.0 - frac)  # linear (the kind was checked when the config was made)


def momentum_at(
    step: int, total_steps: int, cfg: ScheduleConfig, base_momentum: float = 0.9
) -> float:
    """Momentum (SGD) or beta1 (Adam) for ``step``; one-cycle moves it against the lr.

    Example:
        >>> cfg = ScheduleConfig()
        >>> momentum_at(0, 101, cfg), momentum_at(25, 101, cfg), momentum_at(100, 101, cfg)
        (0.95, 0.85, 0.95)
        >>> momentum_at(10, 100, ScheduleConfig(kind="cosine"))
        0.9
    """
    step = _clamp_step(step, total_steps)
    if cfg.kind != "onecycle":
        return base_momentum
    warming, frac = _onecycle_phase(step, total_steps, cfg.pct_start)
    if warming:
        return _cos_interp(cfg.momentum_max, cfg.momentum_min, frac)
    return _cos_interp(cfg.momentum_min, cfg.momentum_max, frac)
