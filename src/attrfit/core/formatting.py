"""Numbers for people, written one way everywhere: tables, reports, comparisons, option ranges.

Example:
    >>> number(0.12345), number(float("nan")), signed(-0.0004), number(0.2, "{:g}")
    ('0.123', '–', '0.000', '0.2')
"""

from __future__ import annotations

import math

MISSING = "–"  # a value that is absent or not a number


def number(x, fmt: str = "{:.3f}", missing: str = MISSING) -> str:
    """``x`` formatted with ``fmt`` (3 decimals by default); ``missing`` for None, NaN or infinity."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return missing
    return fmt.format(x)


def percent(share: float) -> str:
    """A share as a whole percentage: 0.953 -> '95%'."""
    return f"{100 * share:.0f}%"


def signed(x) -> str:
    """+0.123 / -0.123; a value that rounds to zero is 0.000 (never '-0.000')."""
    text = number(x, "{:+.3f}")
    return "0.000" if text in ("+0.000", "-0.000") else text
