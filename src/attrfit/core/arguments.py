"""Checks of the arguments the Python API takes, so a wrong one is one :class:`AttrfitError` line.

The command line's parser checks the same arguments before they reach the library; these
checks sit in the library functions themselves, so ``attrfit.evaluate(run, side="bogus")``
and ``attrfit evaluate RUN --side bogus`` are refused alike, with the choices named.

Example:
    >>> choice("bogus", ("test", "val", "train"), "side")
    Traceback (most recent call last):
    attrfit.core.errors.AttrfitError: side 'bogus' is not one of test, val, train
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from attrfit.core.errors import AttrfitError


def path(value, what: str) -> Path:
    """``value`` as a Path; refused unless it is a ``str`` or an ``os.PathLike``.

    >>> path(42, "run")
    Traceback (most recent call last):
    attrfit.core.errors.AttrfitError: run must be a path (str or pathlib.Path), got int 42
    """
    if isinstance(value, (str, os.PathLike)) and str(value):
        return Path(value)
    raise AttrfitError(f"{what} must be a path (str or pathlib.Path), got {type(value).__name__} {value!r}"[:200])


def optional_path(value, what: str) -> Path | None:
    return None if value is None else path(value, what)


def choice(value, choices: Sequence[str], what: str) -> str:
    if isinstance(value, str) and value in choices:
        return value
    raise AttrfitError(f"{what} {value!r} is not one of {', '.join(choices)}")


def flag(value, what: str, optional: bool = False) -> bool | None:
    """A bool (or, with ``optional``, None for 'the run's own setting'); 'yes' or 1 are refused, not guessed."""
    if isinstance(value, bool) or (optional and value is None):
        return value
    allowed = "True, False or None" if optional else "True or False"
    raise AttrfitError(f"{what} must be {allowed}, got {type(value).__name__} {value!r}"[:200])


def whole(value, what: str, minimum: int = 1) -> int:
    """An int of at least ``minimum`` (a bool is not a number here)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
        return value
    raise AttrfitError(f"{what} must be a whole number of at least {minimum}, got {type(value).__name__} {value!r}"[:200])


def number(value, what: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise AttrfitError(f"{what} must be a number, got {type(value).__name__} {value!r}"[:200])
