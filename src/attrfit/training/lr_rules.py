"""The LR range test's suggestion rules: pure functions ``(lrs, smoothed_losses) -> lr``.

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

Example:
    >>> lrs = np.geomspace(1e-4, 10, 60)
    >>> losses = 2 - np.tanh(3 * (np.log10(lrs) + 2)) + np.maximum(0, np.log10(lrs)) * 20
    >>> round(float(np.log10(valley(lrs, smooth(losses, smoothing_beta(60))))), 1)  # doctest: +SKIP
"""

from __future__ import annotations

import math

import numpy as np

from attrfit.core.errors import AttrfitError

SMOOTH_MEMORY = 0.05  # EMA memory of the smoothed loss, as a fraction of the sweep's steps (see smoothing_beta)
SKIP_START = 0.1  # fraction of the recorded points at the low-LR end that the rules ignore
VALLEY_FRACTION = 2 / 3  # valley: where this share of the fall to the floor has happened
MIN_POINTS = 8  # fewer recorded points than this cannot be read


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


def read_curve(lrs, losses) -> tuple[np.ndarray, np.ndarray, int, int]:
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
    x, y, start, floor = read_curve(lrs, losses)
    return x[start : floor + 1], np.minimum.accumulate(y[start : floor + 1])


def blowup_index(y: np.ndarray, start: int, floor: int) -> int | None:
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
    x, y, start, floor = read_curve(lrs, losses)
    k = blowup_index(y, start, floor)
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


def hardly_fell(curve: dict) -> bool:
    """True when the smoothed loss never fell 5% below where the rules start reading it."""
    _, y, start, floor = read_curve(curve["lrs"], curve["smoothed"])
    return bool(y[floor] > 0.95 * y[start])


def never_blew_up(curve: dict) -> bool:
    _, y, start, floor = read_curve(curve["lrs"], curve["smoothed"])
    return blowup_index(y, start, floor) is None
