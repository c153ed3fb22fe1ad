"""Schedules: the shape of each kind, its end points, and clamping."""

import math

import pytest

from attrfit.core.errors import AttrfitError
from attrfit.recipe.schedule import SCHEDULES, ScheduleConfig, lr_at, momentum_at

TOTAL, MAX_LR = 200, 0.4


def _curve(cfg, total=TOTAL, max_lr=MAX_LR):
    return [lr_at(s, total, max_lr, cfg) for s in range(total)]


def test_onecycle_start_peak_end():
    cfg = ScheduleConfig(kind="onecycle", pct_start=0.25, div_factor=25, final_div_factor=1e4)
    lrs = _curve(cfg)
    assert lrs[0] == pytest.approx(MAX_LR / 25)
    peak = max(range(TOTAL), key=lrs.__getitem__)
    assert abs(peak - 0.25 * TOTAL) <= 1
    assert lrs[peak] == pytest.approx(MAX_LR, rel=1e-3)
    assert lrs[-1] <= MAX_LR / 25 / 1e4 * 1.01
    assert lrs[-1] > 0
    rising, falling = lrs[: peak + 1], lrs[peak:]
    assert all(a <= b for a, b in zip(rising, rising[1:]))
    assert all(a >= b for a, b in zip(falling, falling[1:]))


def test_onecycle_momentum_mirrors_lr():
    cfg = ScheduleConfig()
    lrs = _curve(cfg)
    moms = [momentum_at(s, TOTAL, cfg) for s in range(TOTAL)]
    peak = max(range(TOTAL), key=lrs.__getitem__)
    assert min(range(TOTAL), key=moms.__getitem__) == peak
    assert moms[peak] == pytest.approx(cfg.momentum_min, abs=1e-4)
    assert moms[0] == pytest.approx(cfg.momentum_max)
    assert moms[-1] == pytest.approx(cfg.momentum_max)
    # Cosine in both: halfway through the warm-up, both are halfway.
    half = round(peak / 2)
    lr_frac = (lrs[half] - lrs[0]) / (MAX_LR - lrs[0])
    mom_frac = (cfg.momentum_max - moms[half]) / (cfg.momentum_max - cfg.momentum_min)
    assert lr_frac == pytest.approx(mom_frac, abs=1e-9)
    assert lr_frac == pytest.approx(0.5, abs=0.05)


def test_onecycle_without_warmup_starts_at_peak():
    lrs = _curve(ScheduleConfig(pct_start=0.0))
    assert lrs[0] == MAX_LR and lrs[-1] < MAX_LR / 25 / 1e4 * 1.01


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
def test_warmup_rises_linearly_to_max(kind):
    cfg = ScheduleConfig(kind=kind, warmup_steps=10)
    lrs = _curve(cfg)
    assert 0 < lrs[0] < MAX_LR / 5
    steps = [b - a for a, b in zip(lrs[:10], lrs[1:11])]
    assert steps == pytest.approx([MAX_LR / 11] * 10)
    assert lrs[10] == MAX_LR
    assert max(lrs) == MAX_LR


def test_cosine_shape():
    lrs = _curve(ScheduleConfig(kind="cosine"))
    assert lrs[0] == MAX_LR
    assert lrs[TOTAL // 2] == pytest.approx(MAX_LR / 2)
    assert 0 < lrs[-1] < MAX_LR * 1e-3
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    # cosine lingers near the top: a quarter in, it is still ~85 % of max
    assert lrs[TOTAL // 4] == pytest.approx(MAX_LR * (1 + math.cos(math.pi / 4)) / 2)


def test_linear_shape():
    lrs = _curve(ScheduleConfig(kind="linear", warmup_steps=20))
    decay = lrs[20:]
    diffs = [a - b for a, b in zip(decay, decay[1:])]
    assert diffs == pytest.approx([MAX_LR / (TOTAL - 20)] * len(diffs))
    assert lrs[-1] == pytest.approx(MAX_LR / (TOTAL - 20))


def test_constant_and_other_momentum():
    cfg = ScheduleConfig(kind="constant")
    assert set(_curve(cfg)) == {MAX_LR}
    assert {momentum_at(s, TOTAL, cfg, base_momentum=0.8) for s in range(TOTAL)} == {0.8}


@pytest.mark.parametrize("kind", SCHEDULES)
def test_steps_clamp_to_the_ends(kind):
    cfg = ScheduleConfig(kind=kind, warmup_steps=5)
    assert lr_at(TOTAL + 50, TOTAL, MAX_LR, cfg) == lr_at(TOTAL - 1, TOTAL, MAX_LR, cfg)
    assert lr_at(-3, TOTAL, MAX_LR, cfg) == lr_at(0, TOTAL, MAX_LR, cfg)
    assert momentum_at(10**6, TOTAL, cfg) == momentum_at(TOTAL - 1, TOTAL, cfg)


@pytest.mark.parametrize("kind", SCHEDULES)
def test_single_step_run_is_finite(kind):
    lr = lr_at(0, 1, MAX_LR, ScheduleConfig(kind=kind))
    assert math.isfinite(lr) and lr > 0


def test_unknown_kind_and_bad_values_raise():
    with pytest.raises(AttrfitError, match="onecycle"):
        ScheduleConfig(kind="step")
    with pytest.raises(AttrfitError):
        ScheduleConfig(pct_start=1.5)
    with pytest.raises(AttrfitError):
        lr_at(0, 0, MAX_LR, ScheduleConfig())
