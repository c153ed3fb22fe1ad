"""Predictions for files: finding the images (files, folders, CSVs) and writing rows as they come (CSV or JSON)."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TextIO

from attrfit.core.errors import AttrfitError
from attrfit.core.progress import progress_bar
from attrfit.data.table import IMAGE_COLUMN
from attrfit.core.files import IMAGE_EXTENSIONS
from attrfit.serving.predict import (PREDICT_BATCH, PROB_DECIMALS, Predictor, chunk_size,
                                     prediction_columns, prepare_ahead, stack_pixels)

log = logging.getLogger(__name__)


def find_images(inputs: Sequence[str], images_root: str | None = None) -> list[tuple[str, Path]]:
    """(name for the output, file to read) per image: files as given, folders searched recursively
    for image extensions, CSVs by their ``image_path`` column (relative to ``images_root`` or the CSV's folder).

    Example:
        >>> find_images(["photos/", "one.jpg"])  # doctest: +SKIP
        [('photos/a/1.jpg', PosixPath('photos/a/1.jpg')), ..., ('one.jpg', PosixPath('one.jpg'))]
    """
    found: list[tuple[str, Path]] = []
    for text in inputs:
        p = Path(text)
        if p.is_dir():
            images = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
            if not images:
                log.warning("%s: no image files (%s) in this folder", text, " ".join(IMAGE_EXTENSIONS))
            found += [(str(f), f) for f in images]
        elif p.is_file() and p.suffix.lower() == ".csv":
            found += _csv_images(p, Path(images_root) if images_root else p.parent)
        elif p.is_file():
            found.append((text, p))
        else:
            raise AttrfitError(f"{text}: no such file or folder")
    if not found:
        raise AttrfitError(f"no images found in {', '.join(inputs)}")
    return found


def _csv_images(csv_path: Path, root: Path) -> list[tuple[str, Path]]:
    try:
        with open(csv_path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
            reader = csv.DictReader(f)
            if IMAGE_COLUMN not in (reader.fieldnames or []):
                raise AttrfitError(f"{csv_path}: no '{IMAGE_COLUMN}' column; a CSV input lists images in one")
            names = [row[IMAGE_COLUMN].strip() for row in reader]
    except (UnicodeDecodeError, csv.Error) as e:
        raise AttrfitError(f"{csv_path}: not a readable UTF-8 CSV ({e})") from None
    empty = [i + 2 for i, n in enumerate(names) if not n]
    if empty:
        raise AttrfitError(f"{csv_path}: empty {IMAGE_COLUMN} on line(s) {empty[:5]}")
    return [(n, root / n) for n in names]


def predict_files(predictor: Predictor, items: Sequence[tuple[str, Path]], batch_size: int = PREDICT_BATCH,
                  tta: bool | None = None, all_probs: bool = False, progress: bool = True) -> Iterator[dict]:
    """One row per image in input order: ``image_path``, :func:`prediction_columns`, ``error``.

    An unreadable image gets its reason in ``error`` (and a warning in the log), its prediction
    columns None; the others are predicted. Rows come chunk by chunk: memory stays flat.
    """
    blank = dict.fromkeys(prediction_columns(predictor.schema, all_probs))
    with progress_bar(total=len(items), desc="predicting", enabled=progress, unit="img") as bar:
        for start, decoded in prepare_ahead([p for _, p in items], predictor.prepare, chunk_size(batch_size)):
            good = [d.pixels for d in decoded if not d.error]
            rows = iter(predictor.predict_pixels(stack_pixels(good), batch_size, tta).rows(all_probs) if good else [])
            for (name, _), d in zip(items[start : start + len(decoded)], decoded):
                if d.error:
                    log.warning("cannot read %s: %s", name, d.error)
                yield {IMAGE_COLUMN: name, **(blank if d.error else next(rows)), "error": d.error}
            bar.update(len(decoded))


def write_rows(rows: Iterable[dict], stream: TextIO, fmt: str, columns: list[str]) -> tuple[int, int]:
    """Write rows as they come: CSV, or a JSON array with one object per line. Returns (rows, failed rows)."""
    writer = RowWriter(stream, fmt, columns)
    for row in rows:
        writer.write(row)
    writer.close()
    return writer.n, writer.failed


class RowWriter:
    """One table written row by row (CSV, or a JSON array with one object per line); counts rows and those
    with an ``error``. Several can stream side by side (per-box and per-track rows).

    Example:
        >>> w = RowWriter(sys.stdout, "csv", ["a", "error"]); w.write({"a": 0.5, "error": ""}); w.close()  # doctest: +SKIP
        a,error
        0.5,
    """

    def __init__(self, stream: TextIO, fmt: str, columns: list[str]):
        self.stream, self.columns = stream, columns
        self.n = self.failed = 0
        self.csv = csv.writer(stream, lineterminator="\n") if fmt == "csv" else None
        if self.csv:
            self.csv.writerow(columns)
        else:
            stream.write("[")

    def write(self, row: dict) -> None:
        values = [_rounded(row[c]) for c in self.columns]
        if self.csv:
            self.csv.writerow(["" if v is None else v for v in values])
        else:
            self.stream.write(("\n" if self.n == 0 else ",\n") + json.dumps(dict(zip(self.columns, values))))
        self.n += 1
        self.failed += bool(row.get("error"))

    def close(self) -> None:
        if not self.csv:
            self.stream.write("\n]\n")


def _rounded(v):
    return round(v, PROB_DECIMALS) if isinstance(v, float) else v
