"""One source per option: a config field carries its help sentence, placeholder and range check.

A field declared with :func:`option` holds, in its dataclass ``metadata``, everything the
command line and validation need, so neither keeps its own copy::

    lr: float | str = option(0.2, "max learning rate of the schedule", "LR", check=Range(0, 100, lo_open=True))

A check is a callable ``value -> None | requirement``: None when the value is allowed,
else what the value must be ("in [0, 1)", "one of sgd, adamw"), which :func:`check_value`
turns into one error line naming the flag and the config key. ``None`` values (an unset
optional field) are never checked. This module imports nothing of attrfit but its error
type and number formatter, so every config dataclass can use it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re

from attrfit.core.errors import AttrfitError
from attrfit.core.formatting import number


def option(default=dataclasses.MISSING, help: str = "", metavar: str | None = None, check=None, *,
           default_factory=dataclasses.MISSING, default_text: str | None = None, lr_find: bool = True,
           flag: str | None = None):
    """A dataclass field with its help sentence, ``--help`` placeholder and range check.

    ``default_text`` replaces the shown default (e.g. "from --preset"); ``lr_find=False``
    marks an option the LR range test does not use (``lr-find`` refuses its flag); ``flag``
    names the flag where it is not the field name ("" = no flag, e.g. a positional).

    Example:
        >>> f = option(4, "max shift in pixels", "PX", Range(0, 64))
        >>> f.metadata["metavar"], f.metadata["check"](65)
        ('PX', 'in [0, 64]')
    """
    meta = {"help": help, "metavar": metavar, "check": check, "default_text": default_text, "lr_find": lr_find,
            "flag": flag}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class Range:
    """Numbers in an interval (finite; ends closed unless ``lo_open``/``hi_open``); ``why`` is appended.

    Example:
        >>> Range(0, 1, hi_open=True)(1.0), Range(2)(2), Range(0)(float("nan"))
        ('in [0, 1)', None, 'a finite number >= 0')
    """

    def __init__(self, lo=None, hi=None, *, lo_open: bool = False, hi_open: bool = False, why: str = ""):
        self.lo, self.hi, self.lo_open, self.hi_open, self.why = lo, hi, lo_open, hi_open, why

    def describe(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {number(self.lo, '{:g}')}"
        if self.lo is None:
            return f"{'<' if self.hi_open else '<='} {number(self.hi, '{:g}')}"
        return f"in {'(' if self.lo_open else '['}{number(self.lo, '{:g}')}, {number(self.hi, '{:g}')}{')' if self.hi_open else ']'}"

    def __call__(self, v) -> str | None:
        need = self.describe() + (f" ({self.why})" if self.why else "")
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            return f"a number {need}"
        if not math.isfinite(v):
            return f"a finite number {need}"
        too_low = self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo)
        too_high = self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi)
        return need if too_low or too_high else None


class OneOf:
    """One of fixed choices; a near miss names the choice that was probably meant.

    Example:
        >>> OneOf("mean_accuracy", "mean_balanced_accuracy")("mean_acuracy")
        "one of mean_accuracy, mean_balanced_accuracy (did you mean 'mean_accuracy'?)"
    """

    def __init__(self, *choices: str):
        self.choices = choices

    def describe(self) -> str:
        return f"one of {', '.join(str(c) for c in self.choices)}"

    def __call__(self, v) -> str | None:
        if v in self.choices:
            return None
        names = [str(c) for c in self.choices]
        close = difflib.get_close_matches(str(v), names, n=1)
        return f"one of {', '.join(names)}" + (f" (did you mean '{close[0]}'?)" if close else "")


class Pattern:
    """A string matching ``regex`` (whole string), described to the user as ``what``."""

    def __init__(self, regex: str, what: str):
        self.regex, self.what = re.compile(regex), what

    def describe(self) -> str:
        return self.what

    def __call__(self, v) -> str | None:
        return None if isinstance(v, str) and self.regex.fullmatch(v) else self.what


class OrWord:
    """A fixed word (like 'auto') or a number that ``check`` (a :class:`Range`) allows."""

    def __init__(self, word: str, check: Range):
        self.word, self.check = word, check

    def describe(self) -> str:
        return f"{self.check.describe()} or '{self.word}'"

    def __call__(self, v) -> str | None:
        if v == self.word:
            return None
        need = self.check(v) if not isinstance(v, str) else f"a number {self.check.describe()}"
        return f"{need} or '{self.word}'" if need else None


class EachValue:
    """A mapping whose every value passes ``check`` (e.g. per-head loss weights)."""

    def __init__(self, check):
        self.check = check

    def describe(self) -> str:
        return f"each {self.check.describe()}"

    def __call__(self, v) -> str | None:
        bad = [k for k, x in (v or {}).items() if self.check(x)]
        return f"a weight {self.check(v[bad[0]])} for every head (not {bad[0]}={v[bad[0]]!r})" if bad else None


def flag_of(f: dataclasses.Field) -> str | None:
    """The flag name of a field (``kind`` of the schedule is ``schedule``); None if it has none."""
    flag = f.metadata.get("flag")
    return f.name if flag is None else flag or None


def label(key: str, flag: str | None) -> str:
    """How an error names an option: ``--batch-size (config key batch_size)``."""
    if not flag:
        return f"config key {key}"
    return f"--{flag.replace('_', '-')} (config key {key})"


def check_value(key: str, flag: str | None, f: dataclasses.Field, value) -> None:
    """Raise one clear AttrfitError when ``value`` fails the field's check."""
    check = f.metadata.get("check")
    if check is None or value is None:
        return
    need = check(value)
    if need:
        raise AttrfitError(f"{label(key, flag)} must be {need}, got {value!r}")


def check_fields(obj, section: str = "") -> None:
    """Check every non-dataclass field of dataclass ``obj`` against its metadata (``section`` prefixes keys)."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if not dataclasses.is_dataclass(value):
            check_value(f"{section}.{f.name}" if section else f.name, flag_of(f), f, value)


def default_of(f: dataclasses.Field):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def help_text(f: dataclasses.Field) -> str:
    """The ``--help`` line of a field: its sentence, the allowed values where the placeholder does not
    list them, and the default (``%`` escaped for argparse).

    Example:
        >>> help_text(option(0.0, "label smoothing", "EPS", Range(0, 1, hi_open=True)))
        'label smoothing; in [0, 1) (default: 0.0)'
    """
    meta = f.metadata
    text = meta.get("help") or f.name.replace("_", " ")
    check, metavar = meta.get("check"), meta.get("metavar") or ""
    if check is not None and hasattr(check, "describe") and not metavar.startswith("{"):
        text += f"; {check.describe()}"
    default = default_of(f)
    if meta.get("default_text"):
        shown = meta["default_text"]
    elif isinstance(default, bool):
        shown = "on" if default else "off"
    else:
        shown = "none" if default is None else default
    return f"{text} (default: {shown})".replace("%", "%%")


DURATION_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text) -> float | None:
    """Seconds in a wall-time like ``90s``, ``15m``, ``1.5h`` or ``600`` (seconds); None if it is not one.

    Example:
        >>> parse_duration("15m"), parse_duration("90s"), parse_duration("1.5h"), parse_duration("soon")
        (900.0, 90.0, 5400.0, None)
    """
    seconds = _seconds(text)
    return seconds if seconds is not None and seconds > 0 else None


def _seconds(text) -> float | None:
    """The seconds ``text`` spells, zero included; None when it spells no duration."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", str(text).lower())
    if not m or m.group(2) not in ("", *DURATION_UNITS):
        return None
    return float(m.group(1)) * DURATION_UNITS.get(m.group(2), 1.0)


class Duration:
    """A wall time such as 90s, 15m or 2h."""

    def describe(self) -> str:
        return "a duration such as 90s, 15m or 2h"

    def __call__(self, v) -> str | None:
        if parse_duration(v):
            return None
        return "above 0" if _seconds(v) == 0 else self.describe()
