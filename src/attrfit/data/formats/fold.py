"""The label columns written: the field's binary attributes, or categorical heads folded from one-hot groups.

**binary** (the published protocol): one head per attribute, classes ``0``/``1``; attrfit's
evaluation then reports mA and the instance metrics as the papers do.

**categorical**: each mutually exclusive group the dataset defines (age bins, colours, footwear
kind, ...) becomes one softmax head whose classes are the group's attributes, so a model cannot
predict two age bins at once. The rule for a row that is not exclusive: **no positive, or two
or more, leaves the head unlabelled on that row** (an empty cell: the loss and the metrics skip
it); each group's count of such rows is reported. A group is folded when at least two of its
attributes are among those written. A two-valued attribute the dataset names (Market's
gender male/female) is written with those names; other attributes stay ``0``/``1``.

Either way an attribute (or head) with a single value in the whole table is left out and named:
no model can learn it and attrfit refuses such a head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attrfit.core.errors import AttrfitError
from attrfit.data.formats.source import MISSING, Source

LABELS = ("binary", "categorical")
ATTRIBUTES = ("selected", "all")


@dataclass(frozen=True)
class Columns:
    """The heads to write, one cell per image each ('' = unlabelled), and what the folding did."""

    heads: tuple[str, ...]
    cells: dict[str, list[str]]
    notes: tuple[str, ...]


def chosen_attributes(source: Source, attributes: str) -> list[int]:
    """Column indices of the attributes to write: the evaluated ones (``selected``) or ``all``."""
    if attributes not in ATTRIBUTES:
        raise AttrfitError(f"--attributes must be one of {', '.join(ATTRIBUTES)} (got '{attributes}')")
    return list(source.selected) if attributes == "selected" else list(range(len(source.attributes)))


def columns(source: Source, rows: np.ndarray, attributes: str = "selected", labels: str = "binary") -> Columns:
    """The label columns of ``rows`` (indices into ``source.images``).

    >>> cols = columns(source, np.arange(len(source.images)), "selected", "categorical")  # doctest: +SKIP
    >>> cols.heads[:2]  # doctest: +SKIP
    ('age', 'carryingBackpack')
    """
    if labels not in LABELS:
        raise AttrfitError(f"--labels must be one of {', '.join(LABELS)} (got '{labels}')")
    chosen = chosen_attributes(source, attributes)
    values = source.labels[rows]
    heads: dict[str, list[str]] = {}
    notes: list[str] = []
    folded: set[int] = set()
    if labels == "categorical":
        for g in source.groups:
            members = [(source.attributes.index(a), c) for a, c in g.members if a in source.attributes]
            members = [(j, c) for j, c in members if j in chosen]
            if len(members) < 2:
                continue
            heads[g.head], note = fold_group(values, members, g.head)
            notes.append(note)
            folded.update(j for j, _ in members)
    for j in chosen:
        if j in folded:
            continue
        names = source.value_names.get(source.attributes[j]) if labels == "categorical" else None
        heads[source.attributes[j]] = _binary_cells(values[:, j], names)
    order = _column_order(source, chosen, heads)
    return _drop_constant(Columns(tuple(order), heads, tuple(notes)))


def fold_group(values: np.ndarray, members: list[tuple[int, str]], head: str) -> tuple[list[str], str]:
    """One categorical column from a one-hot group, and the sentence reporting its non-exclusive rows.

    >>> fold_group(np.array([[1, 0], [0, 0], [1, 1]]), [(0, "a"), (1, "b")], "g")
    (['a', '', ''], 'g (a, b): 1 row(s) with no positive and 1 with several left unlabelled')
    """
    block = values[:, [j for j, _ in members]]
    positives = (block == 1).sum(axis=1)
    which = np.argmax(block == 1, axis=1)
    cells = [members[k][1] if p == 1 else "" for p, k in zip(positives, which)]
    none, several = int((positives == 0).sum()), int((positives > 1).sum())
    classes = ", ".join(c for _, c in members)
    return cells, f"{head} ({classes}): {none} row(s) with no positive and {several} with several left unlabelled"


def _binary_cells(col: np.ndarray, names: tuple[str, str] | None) -> list[str]:
    text = names or ("0", "1")
    return ["" if v == MISSING else text[int(v)] for v in col]


def _column_order(source: Source, chosen: list[int], heads: dict) -> list[str]:
    """Heads in the dataset's attribute order; a folded group where its first member was."""
    first_of = {}
    for g in source.groups:
        if g.head in heads:
            idx = [source.attributes.index(a) for a, _ in g.members if a in source.attributes]
            first_of[g.head] = min(chosen.index(j) for j in idx if j in chosen)
    position = {h: first_of.get(h, chosen.index(source.attributes.index(h)) if h in source.attributes else 0)
                for h in heads}
    return sorted(heads, key=lambda h: (position[h], h))


def _drop_constant(cols: Columns) -> Columns:
    single = [h for h in cols.heads if len({c for c in cols.cells[h] if c}) < 2]
    if not single:
        return cols
    kept = tuple(h for h in cols.heads if h not in single)
    if not kept:
        raise AttrfitError("every attribute has a single value in these images: nothing to learn")
    note = (f"left out {len(single)} attribute(s) with a single value in these images (nothing to learn): "
            f"{', '.join(single)}")
    return Columns(kept, {h: cols.cells[h] for h in kept}, cols.notes + (note,))
