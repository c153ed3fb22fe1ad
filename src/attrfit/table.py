"""Stage 1 of the data path: the user's CSV becomes a typed table and a schema.

A table is one row per image: ``image_path`` (relative to the CSV's folder or to an
``--images`` root), one column per categorical attribute ("head"), optionally a group
column (e.g. ``person_id``) and columns to ignore (e.g. ``filename``). An EMPTY cell is a
missing label for that head, encoded as -1 in the label matrix.

The :class:`Schema` (heads and their sorted class lists) is what maps label strings to
indices. It is saved as JSON beside every split, cache and model so that labels always
map to the same indices.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attrfit import files
from attrfit.errors import AttrfitError

IMAGE_COLUMN = "image_path"
MISSING = -1
# Skipped by default where present: the reference CSV's original path column, not a label.
DEFAULT_IGNORED = ("filename",)


@dataclass(frozen=True)
class Schema:
    """Heads in column order, each with its sorted class names.

    >>> s = Schema(("gender",), {"gender": ("female", "male")})
    >>> s.num_classes
    [2]
    """

    heads: tuple[str, ...]
    classes: dict[str, tuple[str, ...]]

    @property
    def num_classes(self) -> list[int]:
        return [len(self.classes[h]) for h in self.heads]

    def to_dict(self) -> dict:
        return {"heads": list(self.heads), "classes": {h: list(self.classes[h]) for h in self.heads}}

    @classmethod
    def from_dict(cls, d: dict) -> "Schema":
        try:
            heads = tuple(d["heads"])
            return cls(heads, {h: tuple(d["classes"][h]) for h in heads})
        except (KeyError, TypeError) as e:
            raise AttrfitError(f"malformed schema: missing {e}") from None

    def save(self, path: Path) -> None:
        """Atomic write (temp file then rename): a crash never leaves half a schema."""
        path = Path(path)
        files.write_text(path, json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: Path) -> "Schema":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def differences(self, other: "Schema") -> list[str]:
        """Human-readable differences from ``other`` (empty when they match)."""
        out = []
        if self.heads != other.heads:
            out.append(f"heads {list(self.heads)} vs {list(other.heads)}")
        for h in set(self.heads) & set(other.heads):
            if self.classes[h] != other.classes[h]:
                out.append(f"head '{h}' classes {list(self.classes[h])} vs {list(other.classes[h])}")
        return out


@dataclass
class Table:
    """The parsed CSV: paths, raw label strings, groups, the schema and the label matrix."""

    csv_path: Path
    image_root: Path
    paths: list[str]  # image_path values exactly as written in the CSV
    raw: dict[str, list[str]]  # head -> label strings per row ('' = missing)
    groups: list[str] | None  # group column values per row, or None
    group_column: str | None
    schema: Schema
    labels: np.ndarray  # int64, N x n_heads, MISSING = -1

    def __len__(self) -> int:
        return len(self.paths)

    def abs_path(self, i: int) -> Path:
        return self.image_root / self.paths[i]

    def abs_paths(self) -> list[Path]:
        return [self.image_root / p for p in self.paths]


def read_table(
    csv_path: str | Path,
    images: str | Path | None = None,
    heads: list[str] | None = None,
    ignore_columns: list[str] | tuple[str, ...] | None = None,
    group_column: str | None = None,
    schema: Schema | None = None,
    check_files: bool = True,
) -> Table:
    """Read and validate a labels CSV.

    ``heads`` picks the label columns explicitly; otherwise every column except
    ``image_path``, ``ignore_columns`` (default: ``filename`` where present) and
    ``group_column`` is a head. With ``schema``
    (from a split, cache or model) labels are encoded with its class lists and a label
    it does not know is an error naming the row.

    >>> t = read_table("data/annotations.csv", ignore_columns=["filename"])  # doctest: +SKIP
    """
    csv_path = Path(csv_path)
    header, rows = _read_rows(csv_path)
    root = Path(images) if images is not None else csv_path.parent
    head_cols = _pick_heads(header, heads, ignore_columns, group_column, csv_path)
    if schema is not None:  # a saved schema decides the heads, whatever else the CSV holds
        head_cols = _heads_from_schema(header, schema, csv_path)
    col = {name: i for i, name in enumerate(header)}
    paths = [r[col[IMAGE_COLUMN]] for r in rows]
    _check_paths(paths, csv_path)
    raw = {h: [r[col[h]] for r in rows] for h in head_cols}
    groups = [r[col[group_column]] for r in rows] if group_column else None
    if schema is None:
        schema = _infer_schema(head_cols, raw, csv_path)
    labels = _encode(raw, schema, csv_path)
    table = Table(csv_path, root, paths, raw, groups, group_column, schema, labels)
    if check_files:
        check_files_exist(table)
    return table


def _read_rows(csv_path: Path) -> tuple[list[str], list[list[str]]]:
    if not csv_path.is_file():
        raise AttrfitError(f"{csv_path}: no such CSV file")
    data = csv_path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # tolerates a BOM
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise AttrfitError(
            f"{csv_path}: line {line} is not UTF-8 (byte {data[e.start]:#x} at offset {e.start}); "
            "re-save the CSV as UTF-8"
        ) from None
    if "\x00" in text:
        raise AttrfitError(f"{csv_path}: contains NUL bytes; this is not a text CSV file")
    try:
        all_rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as e:
        raise AttrfitError(f"{csv_path}: not a valid CSV ({e})") from None
    all_rows = [r for r in all_rows if any(c.strip() for c in r)]  # skip blank lines
    if not all_rows:
        raise AttrfitError(f"{csv_path}: the file is empty")
    header = [c.strip() for c in all_rows[0]]
    if IMAGE_COLUMN not in header:
        raise AttrfitError(
            f"{csv_path}: no '{IMAGE_COLUMN}' column in the header (found: {', '.join(header[:10]) or 'nothing'}); "
            "the CSV needs one column named image_path with each image's path"
        )
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise AttrfitError(f"{csv_path}: duplicate column names {dup}")
    rows = []
    for lineno, r in enumerate(all_rows[1:], start=2):
        if len(r) != len(header):
            raise AttrfitError(
                f"{csv_path}: row {lineno} has {len(r)} fields, the header has {len(header)}; "
                "check for unquoted commas or missing cells"
            )
        rows.append([c.strip() for c in r])
    if not rows:
        raise AttrfitError(f"{csv_path}: has a header but no data rows")
    return header, rows


def _pick_heads(header, heads, ignore_columns, group_column, csv_path) -> list[str]:
    if ignore_columns is None:
        ignore_columns = [c for c in DEFAULT_IGNORED if c in header]
    for name, what in [(group_column, "--group-column")] + [(c, "--ignore-columns") for c in ignore_columns]:
        if name and name not in header:
            raise AttrfitError(f"{csv_path}: {what} '{name}' is not a column (columns: {', '.join(header)})")
    if heads:
        missing = [h for h in heads if h not in header]
        if missing:
            raise AttrfitError(f"{csv_path}: --heads {missing} not in the columns ({', '.join(header)})")
        return list(heads)
    skip = {IMAGE_COLUMN, group_column, *ignore_columns}
    picked = [c for c in header if c not in skip]
    if not picked:
        raise AttrfitError(f"{csv_path}: no label columns besides {IMAGE_COLUMN}")
    return picked


def _heads_from_schema(header, schema: Schema, csv_path: Path) -> list[str]:
    missing = [h for h in schema.heads if h not in header]
    if missing:
        raise AttrfitError(
            f"{csv_path}: the model/split expects heads {list(schema.heads)} but columns {missing} are missing"
        )
    return list(schema.heads)


def _check_paths(paths: list[str], csv_path: Path) -> None:
    empty = [i + 2 for i, p in enumerate(paths) if not p]
    if empty:
        raise AttrfitError(f"{csv_path}: empty {IMAGE_COLUMN} on row(s) {empty[:5]}")
    seen: dict[str, int] = {}
    dups = []
    for i, p in enumerate(paths):
        if p in seen:
            dups.append(f"{p} (rows {seen[p] + 2} and {i + 2})")
        seen.setdefault(p, i)
    if dups:
        raise AttrfitError(
            f"{csv_path}: {len(dups)} duplicate {IMAGE_COLUMN} value(s), e.g. {'; '.join(dups[:3])}; "
            "each image must appear once"
        )


def _infer_schema(head_cols: list[str], raw: dict[str, list[str]], csv_path: Path) -> Schema:
    classes = {}
    for h in head_cols:
        values = sorted({v for v in raw[h] if v != ""})
        if len(values) < 2:
            raise AttrfitError(
                f"{csv_path}: head '{h}' has {len(values)} class(es) {values}; a head needs at least 2 "
                "(drop it with --ignore-columns or --heads)"
            )
        classes[h] = tuple(values)
    return Schema(tuple(head_cols), classes)


def _encode(raw: dict[str, list[str]], schema: Schema, csv_path: Path) -> np.ndarray:
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


def check_files_exist(table: Table) -> None:
    """Raise one clear error listing how many image files are missing, and the first few."""
    missing = [p for p, a in zip(table.paths, table.abs_paths()) if not a.is_file()]
    if missing:
        raise AttrfitError(
            f"{len(missing)} of {len(table)} image files listed in {table.csv_path} are missing under "
            f"{table.image_root}, e.g. {', '.join(missing[:5])}; fix the paths or pass --images DIR"
        )
