"""Label cells and classes: how a column's cells become class names, classes an order, and rows indices.

One rule each, so a table means the same thing everywhere:

- Label cells are stripped; pandas' default missing-value tokens (``NA``, ``N/A``, ``nan``,
  ``NULL``, ``#N/A``, ...) are missing labels like an empty cell, except ``None``, which is
  a real class in the reference data (carryingbag ``None``).
- In a head whose values are all numbers, ``1`` and ``1.0`` are one class, spelled ``1``.
- Classes are sorted numerically, or in natural order where every name is a number or a
  range (``<30, 30-45, 45-60, 60+``), else alphabetically.
- A column that looks like an identifier or a measurement (see :func:`not_categorical`)
  is refused as a head unless ``--heads`` names it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from attrfit.core.errors import AttrfitError
from attrfit.data.schema import Schema

log = logging.getLogger(__name__)

MISSING = -1  # a missing label's index
# pandas' default na_values (read_csv), less 'None': the reference data has a real class 'None'.
MISSING_TOKENS = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "n/a", "nan", "null",
})
# A head needs examples of each class to learn it: more classes than this, with fewer than
# MIN_ROWS_PER_CLASS labelled rows per class on average, is an identifier or free text.
MAX_ID_CLASSES = 50
MIN_ROWS_PER_CLASS = 5
# A column of numbers with more distinct values than this is a quantity (age in years), not a category.
MAX_NUMERIC_CLASSES = 20


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


_RANGE = re.compile(r"(<=?|>=?)?\s*([+-]?\d+(?:\.\d+)?)\s*(?:(?:-|–|to)\s*(\d+(?:\.\d+)?))?\s*(\+)?")


def clean_labels(values: list[str], numeric: bool | None = None) -> list[str]:
    """Missing-value tokens become '' (missing); numbers in a numeric column get one spelling.

    ``numeric`` None: the column is numeric when every non-missing value is a number.

    >>> clean_labels(["1", "1.0", "NA", " 2"])
    ['1', '1', '', '2']
    >>> clean_labels(["None", "n/a", "Bag"])
    ['None', '', 'Bag']
    """
    out = ["" if v in MISSING_TOKENS else v for v in (c.strip() for c in values)]
    if numeric is None:
        numeric = any(out) and all(_NUMBER.fullmatch(v) for v in out if v)
    if numeric:
        out = [canonical_number(v) if _NUMBER.fullmatch(v) else v for v in out]
    return out


def canonical_number(text: str) -> str:
    """'1.0' -> '1', '0.50' -> '0.5', '1e3' -> '1000'."""
    x = float(text)
    return str(int(x)) if x.is_integer() else repr(x)


def numeric_schema(schema: Schema | None, head: str) -> bool | None:
    if schema is None:
        return None
    return all(_NUMBER.fullmatch(c) for c in schema.classes[head])


def class_order(names) -> tuple[str, ...]:
    """Numbers numerically, ranges ('<30', '30-45', '60+') by where they start, anything else alphabetically.

    >>> class_order({"60+", "<30", "30-45", "45-60"})
    ('<30', '30-45', '45-60', '60+')
    >>> class_order({"10", "9", "1.5"})
    ('1.5', '9', '10')
    """
    names = list(names)
    if all(_NUMBER.fullmatch(n) for n in names):
        return tuple(sorted(names, key=lambda n: (float(n), n)))
    keys = [_range_key(n) for n in names]
    if all(k is not None for k in keys):
        return tuple(n for _, n in sorted(zip(keys, names)))
    return tuple(sorted(names))


def _range_key(name: str) -> tuple[float, int, float] | None:
    m = _RANGE.fullmatch(name.strip())
    if not m:
        return None
    start = float(m[2])
    rank = 0 if (m[1] or "").startswith("<") else 2 if (m[1] or "").startswith(">") or m[4] else 1
    return start, rank, float(m[3]) if m[3] else start


def not_categorical(values: list[str]) -> str:
    """Why a column of cleaned label cells is no categorical attribute; '' when it is one.

    Refused: more than MAX_NUMERIC_CLASSES distinct numbers (a quantity such as an age in
    years), or more than MAX_ID_CLASSES classes with fewer than MIN_ROWS_PER_CLASS labelled
    rows per class on average (an ID, a file name, a free-text note): no head can learn it.
    """
    labelled = [v for v in values if v]
    classes = set(labelled)
    if len(classes) > MAX_NUMERIC_CLASSES and all(_NUMBER.fullmatch(v) for v in classes):
        lo, hi = min(classes, key=float), max(classes, key=float)
        return f"{len(classes)} distinct numbers from {lo} to {hi}, a quantity rather than a category"
    if len(classes) > MAX_ID_CLASSES and len(labelled) < MIN_ROWS_PER_CLASS * len(classes):
        return f"{len(classes)} distinct values in {len(labelled)} labelled rows, an identifier or free text"
    return ""


def refuse_non_categorical(raw: dict[str, list[str]], csv_path: Path) -> None:
    why = {h: w for h, w in ((h, not_categorical(v)) for h, v in raw.items()) if w}
    if why:
        names = ",".join(why)
        raise AttrfitError(
            f"{csv_path}: column(s) {list(why)} are not categorical attributes ("
            + "; ".join(f"'{h}': {w}" for h, w in why.items())
            + f"); leave them out with --ignore-columns {names} (an ID of a person or object belongs in "
            "--group-column), or list the label columns with --heads (a column named there is kept as a head)"
        )


def infer_schema(head_cols: list[str], raw: dict[str, list[str]], csv_path: Path) -> Schema:
    classes = {}
    for h in head_cols:
        values = class_order({v for v in raw[h] if v != ""})
        if len(values) < 2:
            raise AttrfitError(
                f"{csv_path}: head '{h}' has {len(values)} class(es) {list(values)}; a head needs at least 2 "
                "(drop it with --ignore-columns or --heads)"
            )
        _warn_near_duplicates(h, values)
        classes[h] = values
    return Schema(tuple(head_cols), classes)


def _warn_near_duplicates(head: str, classes: tuple[str, ...]) -> None:
    """Male/male/MALE, 'Work Bag'/'Work  Bag': kept apart (they may differ on purpose), but said out loud."""
    by_key: dict[str, list[str]] = {}
    for c in classes:
        by_key.setdefault(" ".join(c.split()).casefold(), []).append(c)
    clashes = [" / ".join(v) for v in by_key.values() if len(v) > 1]
    if clashes:
        log.warning("head '%s': classes that differ only in case or spacing are separate classes: %s "
                    "(fix the CSV if they mean the same)", head, "; ".join(clashes))


def encode(raw: dict[str, list[str]], schema: Schema, csv_path: Path) -> np.ndarray:
    n = len(next(iter(raw.values())))
    labels = np.full((n, len(schema.heads)), MISSING, dtype=np.int64)
    for j, h in enumerate(schema.heads):
        index = {c: k for k, c in enumerate(schema.classes[h])}
        for i, v in enumerate(raw[h]):
            if v == "":
                continue
            k = index.get(v)
            if k is None:
                raise AttrfitError(
                    f"{csv_path}: row {i + 2}, column '{h}': unknown class '{v}' "
                    f"(known: {', '.join(schema.classes[h])})"
                )
            labels[i, j] = k
    return labels
