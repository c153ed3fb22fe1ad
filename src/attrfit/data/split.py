"""Stage 2: the held-out split, made once from a seed, saved to disk and verified on every use.

A split file is JSON: the seed, the fractions, the group column, a fingerprint of the
table it was made from, and ``sides`` = {"train": [...], "val": [...], "test": [...]}
listing ``image_path`` values. ``test`` is for the final evaluation only; ``val`` is what
training watches to pick the best epoch. Fractions are of all rows (defaults 75/10/15).

Every command that uses a split calls :func:`verify_split`: if the table changed (rows
added, removed or relabelled) it refuses and names the difference, instead of silently
re-splitting, which is how test images leak into training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attrfit.core import files
from attrfit.core.errors import AttrfitError
from attrfit.data.table import Table
from attrfit.data.schema import Schema

log = logging.getLogger(__name__)

SPLIT_FORMAT = 1
SIDES = ("train", "val", "test")
DEFAULT_TEST_FRACTION = 0.15
DEFAULT_VAL_FRACTION = 0.1
NO_STRATIFY = "none"  # --stratify none: one bucket, no class ratios kept


@dataclass(frozen=True)
class SplitRef:
    """What a checkpoint records of its split: the file, the table it fits, which image is on which side."""

    path: str
    fingerprint: str
    assignment: str | None  # None: recorded by an attrfit that did not digest the assignment


@dataclass(frozen=True)
class Split:
    """A saved split: the one reader and writer of the split file's keys (:meth:`from_dict`, :meth:`to_dict`).

    ``sides`` maps "train"/"val"/"test" to sorted ``image_path`` values. Keys that older
    split files may lack are None (``schema``, ``assignment``, ``row_digests``,
    ``exact_duplicates_across_sides``: the last is None when duplicates were never looked for).
    """

    seed: int
    fingerprint: str  # sha256 of the table the split was made from (see :func:`fingerprint`)
    sides: dict[str, list[str]]
    counts: dict[str, int]  # images per side when the split was made
    test_fraction: float | None = None
    val_fraction: float | None = None
    group_column: str | None = None
    stratify: str | None = None  # a head, or "none"
    n_rows: int | None = None
    schema: Schema | None = None
    assignment: str | None = None  # assignment_digest(sides)
    row_digests: dict[str, list[str]] | None = None  # per side, row_digest of each listed image
    exact_duplicates_across_sides: list[list[str]] | None = None  # [side_a, path_a, side_b, path_b] each
    origin: str | None = None  # a published partition's source ('attrfit dataset'); None: made by make_split
    format: int = SPLIT_FORMAT

    OPTIONAL = ("schema", "assignment", "row_digests", "exact_duplicates_across_sides", "origin")  # left out when None

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["schema"] = self.schema.to_dict() if self.schema is not None else None
        d["sides"] = {s: list(self.sides[s]) for s in SIDES}
        return {k: v for k, v in d.items() if v is not None or k not in self.OPTIONAL}

    @classmethod
    def from_dict(cls, d: dict) -> "Split":
        """Raises KeyError, TypeError or AssertionError when ``d`` is not a split."""
        sides = d["sides"]
        assert all(isinstance(sides[s], list) and all(isinstance(p, str) for p in sides[s]) for s in SIDES)
        known = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in d.items() if k in known}
        schema = Schema.from_dict(d["schema"]) if d.get("schema") is not None else None
        counts = d.get("counts") or {s: len(sides[s]) for s in SIDES}
        return cls(**{**kept, "seed": d["seed"], "fingerprint": d["fingerprint"], "sides": {s: sides[s] for s in SIDES},
                      "counts": counts, "schema": schema})

    def ref(self, path: str | Path) -> SplitRef:
        return SplitRef(str(path), self.fingerprint, assignment_digest(self.sides))


def new_split_advice(csv_path: str | Path = "CSV") -> str:
    """How to get a split that fits: a NEW file, so that runs made with the old one stay evaluable."""
    return (f"write a new split file ('attrfit split {csv_path} --out NEW.split.json') and train with "
            "'--split NEW.split.json'; replacing the old file (--force) leaves the runs made with it unable to be "
            "evaluated on their own test side")


def row_digest(table: Table, i: int) -> str:
    """8-hex digest of one row's labels and group (what a relabelling changes)."""
    parts = [table.raw[h][i] for h in table.schema.heads]
    if table.groups is not None:
        parts.append("group=" + table.groups[i])
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:8]


def fingerprint(table: Table) -> str:
    """sha256 over the heads and every row's path, labels and group, independent of row order."""
    h = hashlib.sha256()
    h.update("\x1e".join(table.schema.heads).encode())
    for i in sorted(range(len(table)), key=table.paths.__getitem__):
        h.update(f"\x1e{table.paths[i]}\x1f{row_digest(table, i)}".encode())
    return h.hexdigest()


def make_split(
    table: Table,
    test_fraction: float | None = None,
    val_fraction: float | None = None,
    seed: int | None = None,
    stratify: str | None = None,
) -> Split:
    """Assign every row to train/val/test, keeping each group on one side.

    Units (groups, or single rows without a group column) are bucketed by the stratify
    head's label (a group's most common label), shuffled with ``seed`` within each
    bucket and cut by cumulative row counts, so class ratios match across sides
    (``stratify="none"``: one bucket). None means the default (0.15, 0.1, seed 0, the
    first head). A row whose group cell is empty is a group of its own. Refuses a split
    with an empty test (or val) side and one whose train side has no label for a head.

    >>> split = make_split(table, 0.15, 0.1, seed=0)  # doctest: +SKIP
    >>> sorted(split.sides)  # doctest: +SKIP
    ['test', 'train', 'val']
    """
    test_fraction = DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction
    val_fraction = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
    seed = 0 if seed is None else seed
    _check_fractions(test_fraction, val_fraction)
    head = stratify or table.schema.heads[0]
    if head not in (*table.schema.heads, NO_STRATIFY):
        raise AttrfitError(f"--stratify '{head}' is not a head (heads: {', '.join(table.schema.heads)}; "
                           f"or '{NO_STRATIFY}')")
    units = _units(table)
    side_of_unit = _assign(units, table, head, test_fraction, val_fraction, seed)
    sides: dict[str, list[str]] = {s: [] for s in SIDES}
    rows_of: dict[str, list[int]] = {s: [] for s in SIDES}
    for unit, rows in units.items():
        sides[side_of_unit[unit]].extend(table.paths[i] for i in rows)
        rows_of[side_of_unit[unit]].extend(rows)
    _check_sides(table, units, rows_of, head, {"test": test_fraction, "val": val_fraction})
    digests = {table.paths[i]: row_digest(table, i) for i in range(len(table))}
    for s in SIDES:
        sides[s].sort()
    return Split(seed=seed, fingerprint=fingerprint(table), sides=sides, counts={s: len(sides[s]) for s in SIDES},
                 test_fraction=test_fraction, val_fraction=val_fraction, group_column=table.group_column,
                 stratify=head, n_rows=len(table), schema=table.schema, assignment=assignment_digest(sides),
                 row_digests={s: [digests[p] for p in sides[s]] for s in SIDES})


def assignment_digest(sides: dict[str, list[str]]) -> str:
    """sha256 of which image is on which side: what a hand edit or a re-split changes."""
    h = hashlib.sha256()
    for s in SIDES:
        for p in sorted(sides[s]):
            h.update(f"{s}\x1f{p}\x1e".encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _check_fractions(test_fraction: float, val_fraction: float) -> None:
    if not (0 < test_fraction < 1 and 0 <= val_fraction < 1 and test_fraction + val_fraction < 1):
        raise AttrfitError(
            f"fractions must satisfy 0 < test < 1, 0 <= val < 1, test + val < 1 (got test={test_fraction}, val={val_fraction})"
        )


def _units(table: Table) -> dict[str, list[int]]:
    """Rows that move together: one group each, or one row each without a group column.

    A row with an empty group cell is its own unit: lumping all blanks into one giant
    "group" would put them all on one side.
    """
    units: dict[str, list[int]] = defaultdict(list)
    blank = 0
    for i in range(len(table)):
        key = table.groups[i] if table.groups is not None else table.paths[i]
        if not key:
            blank += 1
            key = "\x00" + table.paths[i]  # no group value starts with NUL (the CSV reader refuses NUL)
        units[key].append(i)
    if blank:
        log.warning("%d row(s) have an empty --group-column '%s' cell: each of them is a group of its own",
                    blank, table.group_column)
    return dict(units)


def _buckets(units, table, head) -> dict[int, list[str]]:
    """Units by the stratify head's label (a group's most common label; -1: unlabelled)."""
    buckets: dict[int, list[str]] = defaultdict(list)
    if head == NO_STRATIFY:
        return {0: sorted(units)}
    j = table.schema.heads.index(head)
    for unit in sorted(units):
        labels = table.labels[units[unit], j]
        labels = labels[labels >= 0]
        buckets[int(np.bincount(labels).argmax()) if len(labels) else -1].append(unit)
    return buckets


def _assign(units, table, head, test_fraction, val_fraction, seed) -> dict[str, str]:
    buckets = _buckets(units, table, head)
    rng = np.random.default_rng(seed)
    side_of = {}
    for b in sorted(buckets):
        order = [buckets[b][k] for k in rng.permutation(len(buckets[b]))]
        sizes = np.array([len(units[u]) for u in order], dtype=float)
        mid = (np.cumsum(sizes) - sizes / 2) / sizes.sum()  # where each unit's rows sit in the bucket
        for u, m in zip(order, mid):
            side_of[u] = "test" if m < test_fraction else "val" if m < test_fraction + val_fraction else "train"
    return side_of


def _check_sides(table: Table, units, rows_of: dict[str, list[int]], head: str, fractions: dict) -> None:
    """Refuse (naming the cause) a split with an empty test/val side or a head unlabelled on train."""
    if fractions["val"] == 0:
        log.warning("--val-fraction 0: the val side is empty, and 'attrfit train' needs one to pick the best epoch")
    for side in ("test", "val"):
        if fractions[side] > 0 and not rows_of[side]:
            raise AttrfitError(f"the split would leave the {side} side empty: "
                               f"{_empty_side_cause(table, units, head, side, fractions[side])}; nothing was saved")
    unlabelled = unlearnable_heads(table.labels[rows_of["train"]], table.schema.heads)
    if unlabelled:
        raise AttrfitError(no_train_labels_message(unlabelled, "the split would leave"))


def _empty_side_cause(table: Table, units, head: str, side: str, fraction: float) -> str:
    word = f"groups of '{table.group_column}'" if table.group_column else "rows"
    n = len(units)
    if n * fraction < 1:
        return (f"{n} {word} are too few for a {side} share of {fraction:g} (less than one); label more images, "
                f"or raise --{side}-fraction to at least {1 / n:.2g}")
    buckets = _buckets(units, table, head)
    if len(buckets) > 1:
        biggest = max(len(b) for b in buckets.values())
        return (f"stratifying by '{head}' shares out each of its {len(buckets)} classes separately, and none has "
                f"enough {word} for a {fraction:g} share (the largest has {biggest}); pass --stratify none, "
                f"or --stratify with a head of fewer classes, or raise --{side}-fraction")
    largest = max(len(r) for r in units.values())
    return (f"the {word} are too large for a {fraction:g} share (the largest has {largest} of {len(table)} rows), "
            f"so the {side} share falls inside one of them; raise --{side}-fraction, or split by smaller groups")


def unlearnable_heads(train_labels: np.ndarray, heads) -> list[str]:
    """Heads with no labelled row (label >= 0) among ``train_labels`` (N x H): they cannot learn."""
    return [h for j, h in enumerate(heads) if not (np.asarray(train_labels)[:, j] >= 0).any()]


def no_train_labels_message(heads: list[str], lead: str = "the split leaves") -> str:
    return (f"{lead} head(s) {heads} with no labelled row on the train side: such a head cannot learn and its "
            f"'majority class' would be arbitrary; leave it out (--ignore-columns {','.join(heads)}) or label "
            "more of its rows")


def default_split_path(csv_path: Path) -> Path:
    return Path(csv_path).with_name(Path(csv_path).stem + ".split.json")


def save_split(split: Split, path: str | Path, force: bool = False) -> Path:
    """Write the split atomically; never overwrite an existing file unless ``force``."""
    path = Path(path)
    if path.exists() and not force:
        raise AttrfitError(
            f"{path} already exists; a saved split is never replaced silently (that is how test images "
            "leak into training). Use it as it is, or write a new one with --out NEW.split.json (and train with "
            "--split NEW.split.json); --force replaces it"
        )
    text = json.dumps(split.to_dict(), indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    files.write_text(path, text, "the split file",
                     "choose a writable place for it (--split FILE, or --out FILE with 'attrfit split')")
    return path


def load_split(path: str | Path) -> Split:
    """Read and check a split file (any a current or older attrfit wrote)."""
    path = Path(path)
    if not path.is_file():
        raise AttrfitError(f"{path}: no such split file; make one with 'attrfit split'")
    try:
        split = Split.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError, AssertionError, AttrfitError):
        raise AttrfitError(f"{path}: not a valid attrfit split file (was it edited by hand?)") from None
    overlap = _overlaps(split.sides)
    if overlap:
        raise AttrfitError(f"{path}: {overlap}; the split file was edited by hand, make a new one with 'attrfit split'")
    if split.assignment is not None and split.assignment != assignment_digest(split.sides):
        raise AttrfitError(f"{path}: the images on its sides were edited by hand (their digest does not match); "
                           f"{new_split_advice()}, and retrain")
    return split


def _overlaps(sides: dict) -> str:
    seen: dict[str, str] = {}
    for s in SIDES:
        for p in sides[s]:
            if p in seen:
                return f"'{p}' is on both the {seen[p]} and the {s} side"
            seen[p] = s
    return ""


def verify_split(split: Split, table: Table, split_path: str | Path = "split") -> dict[str, np.ndarray]:
    """Check the split matches the table; return row indices per side.

    Refuses (AttrfitError naming the difference) when rows were added, removed or relabelled.
    """
    if fingerprint(table) != split.fingerprint:
        raise AttrfitError(f"{split_path} does not match {table.csv_path}: {describe_difference(split, table)}")
    saved = split.schema or table.schema
    if saved.differences(table.schema):
        raise AttrfitError(f"{split_path}: schema differs from the table: {'; '.join(saved.differences(table.schema))}")
    index = {p: i for i, p in enumerate(table.paths)}
    listed = [p for s in SIDES for p in split.sides[s]]
    if len(listed) != len(index) or not set(listed) <= set(index):
        unknown = sorted(set(listed) - set(index))
        unlisted = sorted(set(index) - set(listed))
        what = [f"names {len(unknown)} image(s) not in {table.csv_path} (e.g. {', '.join(unknown[:3])})"] if unknown else []
        what += [f"leaves out {len(unlisted)} of its rows (e.g. {', '.join(unlisted[:3])})"] if unlisted else []
        raise AttrfitError(f"{split_path}: the split {' and '.join(what) or 'lists an image twice'}; it was edited "
                           f"by hand: {new_split_advice(table.csv_path)}")
    return {s: np.array([index[p] for p in split.sides[s]], dtype=np.int64) for s in SIDES}


def describe_difference(split: Split, table: Table) -> str:
    digests = split.row_digests or {}
    saved = {p: (s, d) for s in SIDES for p, d in zip(split.sides[s], digests.get(s, []))}
    saved_paths = {p for s in SIDES for p in split.sides[s]}
    now = set(table.paths)
    added = sorted(now - saved_paths)
    removed = sorted(saved_paths - now)
    relabelled = [p for i, p in enumerate(table.paths) if p in saved and saved[p][1] != row_digest(table, i)]
    parts = []
    for what, items in (("added", added), ("removed", removed), ("relabelled", relabelled)):
        if items:
            parts.append(f"{len(items)} row(s) {what} (e.g. {', '.join(items[:3])})")
    if not parts:
        heads = list(split.schema.heads) if split.schema is not None else None
        parts.append(f"its heads are {heads}, the table's {list(table.schema.heads)}"
                     if heads not in (None, list(table.schema.heads)) else "the heads or group column differ")
    return (
        "; ".join(parts)
        + f". A split is never re-made silently: restore the original table, or {new_split_advice(table.csv_path)} "
        "(and retrain)"
    )


def file_digests(paths: list[Path]) -> list[str]:
    """sha1 of each file's bytes (for exact-duplicate detection)."""
    out = []
    for p in paths:
        out.append(hashlib.sha1(p.read_bytes()).hexdigest())
    return out


def cross_side_duplicates(table: Table, split: Split) -> list[tuple[str, str, str, str]]:
    """Images whose bytes are identical but sit on different sides: (side_a, path_a, side_b, path_b)."""
    side_of = {p: s for s in SIDES for p in split.sides[s]}
    first: dict[str, str] = {}
    out = []
    for p, d in zip(table.paths, file_digests(table.abs_paths())):
        if d in first and side_of[first[d]] != side_of[p]:
            out.append((side_of[first[d]], first[d], side_of[p], p))
        first.setdefault(d, p)
    return out


def record_duplicates(split: Split, table: Table) -> Split:
    """The split with its byte-identical images on different sides recorded (and a warning logged)."""
    dups = cross_side_duplicates(table, split)
    if dups:
        log.warning("%d image(s) have byte-identical copies on another side (they leak), e.g. %s", len(dups),
                    "; ".join(f"{a}:{pa} = {b}:{pb}" for a, pa, b, pb in dups[:3]))
    return dataclasses.replace(split, exact_duplicates_across_sides=[list(d) for d in dups])


def same_split(recorded: SplitRef, split: Split) -> bool:
    """Whether a split equals the one a checkpoint recorded: same table and same assignment to sides."""
    if recorded.fingerprint != split.fingerprint:
        return False
    return recorded.assignment is None or recorded.assignment == (split.assignment or assignment_digest(split.sides))
