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

from attrfit.errors import AttrfitError

SCHEDULES = ("onecycle", "constant", "cosine", "linear")


@dataclass(frozen=True)
class ScheduleConfig:
    """Shape of the learning-rate (and momentum) schedule; max_lr is passed separately.

    Example:
        >>> ScheduleConfig(kind="cosine", warmup_steps=100).kind
        'cosine'
    """

    kind: str = "onecycle"
    pct_start: float = 0.25  # onecycle: fraction of steps spent warming up
    div_factor: float = 25.0  # onecycle: start lr = max_lr / div_factor
    final_div_factor: float = 1e4  # onecycle: final lr = start lr / final_div_factor
    warmup_steps: int = 0  # cosine, linear, constant: linear warm-up length
    momentum_max: float = 0.95  # onecycle: momentum at the start and the end
    momentum_min: float = 0.85  # onecycle: momentum at the lr peak

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise AttrfitError(
                f"unknown schedule kind {self.kind!r}; choose one of {', '.join(SCHEDULES)}"
            )
        if not 0.0 <= self.pct_start <= 1.0:
            raise AttrfitError(f"schedule pct_start must be in [0, 1], got {self.pct_start}")
        if self.div_factor <= 0 or self.final_div_factor <= 0:
            raise AttrfitError("schedule div_factor and final_div_factor must be > 0")
        if self.warmup_steps < 0:
            raise AttrfitError(f"schedule warmup_steps must be >= 0, got {self.warmup_steps}")


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
    if cfg.kind == "linear":
        return max_lr * (1.0 - frac)
    raise AttrfitError(f"unknown schedule kind {cfg.kind!r}; choose one of {', '.join(SCHEDULES)}")


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
