"""The user's CSV becomes a typed :class:`Table`: image paths, the label matrix and its schema.

A table is one row per image: ``image_path`` (relative to the CSV's folder or to an
``--images`` root), one column per categorical attribute ("head"), optionally a group
column (e.g. ``person_id``) and columns to ignore (e.g. ``filename``). An EMPTY cell is a
missing label for that head, encoded as -1 in the label matrix. The delimiter is the one
that makes ``image_path`` a header field (``,`` ``;`` tab ``|``); how label cells become
classes is :mod:`attrfit.data.labels`'s, the heads and classes are a
:class:`~attrfit.data.schema.Schema`.
"""
from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attrfit.core.errors import AttrfitError
from attrfit.data.labels import clean_labels, encode, infer_schema, numeric_schema, refuse_non_categorical
from attrfit.data.schema import Schema

log = logging.getLogger(__name__)

IMAGE_COLUMN = "image_path"
# Skipped by default where present: the reference CSV's original path column, not a label.
DEFAULT_IGNORED = ("filename",)
DELIMITERS = (",", ";", "\t", "|")


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
    labels: np.ndarray  # int64, N x n_heads, 
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
    ``image_path``, ``filename`` (where present), ``ignore_columns`` and ``group_column``
    is a head, and a column that looks like an identifier or a measurement is refused.
    With ``schema`` (from a split, cache or model) labels are encoded with its class lists
    and a label it does not know is an error naming the row.

    >>> t = read_table("data/annotations.csv", ignore_columns=["notes"])  # doctest: +SKIP
    """
    csv_path = Path(csv_path)
    header, rows = _read_rows(csv_path)
    root = Path(images) if images is not None else csv_path.parent
    head_cols = _pick_heads(header, heads, ignore_columns, group_column, csv_path)
    if schema is not None:  # a saved schema decides the heads, whatever else the CSV holds
        head_cols = _heads_from_schema(header, schema, csv_path)
    col = {name: i for i, name in enumerate(header)}
    paths = [r[col[IMAGE_COLUMN]] for r in rows]
    _check_paths(paths, csv_path, root)
    raw = {h: clean_labels([r[col[h]] for r in rows], numeric_schema(schema, h)) for h in head_cols}
    groups = clean_labels([r[col[group_column]] for r in rows], numeric=False) if group_column else None
    if schema is None:
        if not heads:  # a column named in --heads is the user's choice
            refuse_non_categorical(raw, csv_path)
        schema = infer_schema(head_cols, raw, csv_path)
    labels = encode(raw, schema, csv_path)
    table = Table(csv_path, root, paths, raw, groups, group_column, schema, labels)
    if check_files:
        check_files_exist(table)
    return table


def with_class_order(table: Table, schema: Schema) -> Table:
    """``table`` re-encoded with ``schema``'s class order (same heads and class names, another order).

    Lets a split or model saved with an older class order keep its label indices.
    """
    return dataclasses.replace(table, schema=schema, labels=encode(table.raw, schema, table.csv_path))


# ---------------------------------------------------------------- the file: encoding, delimiter, header

def _read_rows(csv_path: Path) -> tuple[list[str], list[list[str]]]:
    if not csv_path.is_file():
        raise AttrfitError(f"{csv_path}: no such CSV file")
    text = _decode(csv_path.read_bytes(), csv_path)
    if "\x00" in text:
        raise AttrfitError(f"{csv_path}: contains NUL bytes; this is not a text CSV file (if it is UTF-16 without "
                           "a byte-order mark, re-save it as UTF-8)")
    text, delimiter = _excel_sep_line(text)
    delimiter = delimiter or _delimiter(text)
    try:
        all_rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
    except csv.Error as e:
        raise AttrfitError(f"{csv_path}: not a valid CSV ({e})") from None
    all_rows = [r for r in all_rows if any(c.strip() for c in r)]  # skip blank lines
    if not all_rows:
        raise AttrfitError(f"{csv_path}: the file is empty")
    header = [c.strip() for c in all_rows[0]]
    _check_image_column(header, csv_path)
    rows = []
    for lineno, r in enumerate(all_rows[1:], start=2):
        if len(r) > len(header) and not any(c.strip() for c in r[len(header):]):
            r = r[: len(header)]  # trailing empty cells (spreadsheet exports) are not data
        if len(r) != len(header):
            raise AttrfitError(
                f"{csv_path}: row {lineno} has {len(r)} fields, the header has {len(header)}; "
                "check for unquoted commas or missing cells"
            )
        rows.append([c.strip() for c in r])
    header, rows = _drop_unnamed_columns(header, rows, csv_path)
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise AttrfitError(f"{csv_path}: duplicate column names {dup}; rename them so each column has its own name")
    if not rows:
        raise AttrfitError(f"{csv_path}: has a header but no data rows")
    return header, rows


def _decode(data: bytes, csv_path: Path) -> str:
    """UTF-8 (with or without a BOM), or UTF-16/32 when a byte-order mark says so."""
    for bom, encoding in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                          (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                raise AttrfitError(f"{csv_path}: starts with a {encoding.upper()} byte-order mark but is not valid "
                                   f"{encoding.upper()}; re-save the CSV as UTF-8") from None
    try:
        return data.decode("utf-8-sig")  # tolerates a BOM
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise AttrfitError(
            f"{csv_path}: line {line} is not UTF-8 (byte {data[e.start]:#x} at offset {e.start}; Latin-1 or "
            "Windows-1252?); re-save the CSV as UTF-8 (in Excel: Save As 'CSV UTF-8')"
        ) from None


def _delimiter(text: str) -> str:
    """The delimiter that makes ``image_path`` a header field; else the most frequent one; else ','.

    Spreadsheets write ';' where the decimal separator is ',' (much of Europe), or tabs.
    """
    first = next((line for line in text.splitlines() if line.strip()), "")
    for d in DELIMITERS:
        if IMAGE_COLUMN in (c.strip().strip('"').strip() for c in first.split(d)):
            return d
    counts = {d: first.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=counts.__getitem__)
    return best if counts[best] else ","


def _excel_sep_line(text: str) -> tuple[str, str | None]:
    """Excel's optional first line ``sep=;`` names the delimiter; it is not the header."""
    first, _, rest = text.partition("\n")
    m = re.fullmatch(r'"?sep=(.)"?,*\r?', first.strip(" "))
    return (rest, m[1]) if m else (text, None)


def _check_image_column(header: list[str], csv_path: Path) -> None:
    if IMAGE_COLUMN in header:
        return
    close = [c for c in header if re.sub(r"[\s_.-]", "", c.lower()) in ("imagepath", "image", "path", "filepath")]
    hint = f" ('{close[0]}'? rename it to image_path)" if close else ""
    raise AttrfitError(
        f"{csv_path}: no '{IMAGE_COLUMN}' column in the header (found: {', '.join(header[:10]) or 'nothing'}){hint}; "
        "the CSV needs one column named image_path with each image's path"
    )


def _drop_unnamed_columns(header: list[str], rows: list[list[str]], csv_path: Path):
    """Drop columns with an empty name and no values (trailing commas of spreadsheet exports)."""
    unnamed = [j for j, c in enumerate(header) if not c]
    for j in unnamed:
        filled = next(((i, r[j]) for i, r in enumerate(rows, start=2) if r[j]), None)
        if filled:
            raise AttrfitError(
                f"{csv_path}: column {j + 1} has no name in the header but holds values (e.g. row {filled[0]}: "
                f"'{filled[1]}'); give it a name in the header (it becomes a head), or delete the column"
            )
    keep = [j for j, c in enumerate(header) if c]
    if len(keep) == len(header):
        return header, rows
    return [header[j] for j in keep], [[r[j] for j in keep] for r in rows]


# ---------------------------------------------------------------- columns: heads, ignored, group

def _pick_heads(header, heads, ignore_columns, group_column, csv_path) -> list[str]:
    ignore_columns = list(ignore_columns or [])
    for name, what in [(group_column, "--group-column")] + [(c, "--ignore-columns") for c in ignore_columns]:
        if name and name not in header:
            raise AttrfitError(f"{csv_path}: {what} '{name}' is not a column (columns: {', '.join(header)})")
    if heads:
        missing = [h for h in heads if h not in header]
        if missing:
            raise AttrfitError(f"{csv_path}: --heads {missing} not in the columns ({', '.join(header)})")
        taken = [h for h in heads if h in (IMAGE_COLUMN, group_column)]
        if taken:
            raise AttrfitError(f"{csv_path}: --heads names {taken}, the image path or the group column; "
                               "those are not labels")
        return list(heads)
    # --ignore-columns adds to the default list: 'filename' is never a label
    skip = {IMAGE_COLUMN, group_column, *DEFAULT_IGNORED, *ignore_columns}
    picked = [c for c in header if c not in skip]
    if not picked:
        raise AttrfitError(f"{csv_path}: no label columns besides {', '.join(c for c in header if c in skip)}")
    return picked


def _heads_from_schema(header, schema: Schema, csv_path: Path) -> list[str]:
    missing = [h for h in schema.heads if h not in header]
    if missing:
        raise AttrfitError(
            f"{csv_path}: the model/split expects heads {list(schema.heads)} but columns {missing} are missing"
        )
    return list(schema.heads)


def _check_paths(paths: list[str], csv_path: Path, root: Path) -> None:
    """Refuse empty paths and the same file listed twice, however its path is spelled."""
    empty = [i + 2 for i, p in enumerate(paths) if not p]
    if empty:
        raise AttrfitError(f"{csv_path}: empty {IMAGE_COLUMN} on row(s) {empty[:5]}")
    base = os.path.abspath(root)
    seen: dict[str, int] = {}
    dups = []
    for i, p in enumerate(paths):
        key = os.path.normpath(os.path.join(base, p))  # x.jpg, ./x.jpg, a/../x.jpg, /abs/x.jpg: one file
        if key in seen:
            j = seen[key]
            dups.append(f"{p} (rows {j + 2} and {i + 2})" if paths[j] == p
                        else f"'{paths[j]}' (row {j + 2}) and '{p}' (row {i + 2}) are the same file")
        seen.setdefault(key, i)
    if dups:
        raise AttrfitError(
            f"{csv_path}: {len(dups)} duplicate {IMAGE_COLUMN} value(s), e.g. {'; '.join(dups[:3])}; "
            "each image must appear once"
        )


# '<30', '30-45', '45 to 60', '60+', '>=60': a range of numbers, ordered by where it starts


def check_files_exist(table: Table) -> None:
    """Raise one clear error listing how many image files are missing, and the first few."""
    missing = [p for p, a in zip(table.paths, table.abs_paths()) if not a.is_file()]
    if missing:
        hint = "; the paths use '\\': write them with '/'" if any("\\" in p for p in missing) and os.sep == "/" else ""
        raise AttrfitError(
            f"{len(missing)} of {len(table)} image files listed in {table.csv_path} are missing under "
            f"{table.image_root}, e.g. {', '.join(missing[:5])}{hint}; fix the paths or pass --images DIR"
        )
