"""A partition given as a file of image lists: the zero-shot (identity-disjoint) protocols and any other.

Two formats, never a pickle (unpickling a downloaded file can run any code):

- JSON: ``{"train": [...], "val": [...], "test": [...]}`` (``train_idx``/``val_idx``/``test_idx``,
  the toolkits' names, are read too); each list holds 0-based row numbers in the dataset's own
  order (the order of its annotation file, as the toolkits' index lists are) or image names as
  the annotation file names them (PA-100k ``000001.jpg``, RAPv2's ``name``, PETA's
  ``00001.png`` or the release's ``<subset>/archive/<file>``).
- CSV with a header: a ``side`` column (train/val/test) and an ``index`` or ``image`` column.

Without a val side, val is taken from train's identities (see :func:`source.carve_val`).

    >>> read_partition(Path("peta_zs.json"), source)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from attrfit.core.errors import AttrfitError
from attrfit.data.formats.source import SIDES, Partition, Source, carve_val, check_sides

PICKLE_MAGIC = (b"\x80", b"(dp", b"(lp", b"ccopy_reg")
KEYS = {"train": ("train", "train_idx"), "val": ("val", "val_idx"), "test": ("test", "test_idx")}


def read_partition(path: Path, source: Source, val_fraction: float = 0.1, seed: int = 0) -> Partition:
    """The partition in ``path`` as row indices of ``source``'s images, checked."""
    path = Path(path)
    data = _read_bytes(path)
    if path.suffix.lower() in (".pkl", ".pickle") or data.startswith(PICKLE_MAGIC):
        raise AttrfitError(f"{path}: is a Python pickle, which attrfit never opens (unpickling runs whatever code the "
                           "file holds); write its index lists as JSON with code you trust: "
                           '{"train": [...], "val": [...], "test": [...]} (0-based row numbers or image names)')
    lists = _json_lists(path, data) if path.suffix.lower() == ".json" or data.lstrip()[:1] == b"{" \
        else _csv_lists(path, data)
    sides = {side: _rows(path, side, items, source) for side, items in lists.items()}
    sides = check_sides(sides, len(source.images), str(path))
    origin = f"{path.name} (a partition file)"
    if "val" not in sides or len(sides["val"]) == 0:
        sides, why = carve_val(sides, source.identities, val_fraction, seed)
        origin += f"; {why}"
    return Partition(path.stem.removesuffix(".split"), sides, origin)


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise AttrfitError(f"{path}: no such partition file")
    return path.read_bytes()


def _json_lists(path: Path, data: bytes) -> dict[str, list]:
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as e:
        raise AttrfitError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise AttrfitError(f"{path}: expected a JSON object with train, val and test lists")
    out = {}
    for side, keys in KEYS.items():
        key = next((k for k in keys if k in doc), None)
        if key is None:
            if side == "val":
                continue
            raise AttrfitError(f"{path}: no '{side}' list (keys: {', '.join(map(str, doc)) or 'none'})")
        if not isinstance(doc[key], list):
            raise AttrfitError(f"{path}: '{key}' is not a list")
        out[side] = doc[key]
    return out


def _csv_lists(path: Path, data: bytes) -> dict[str, list]:
    try:
        rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    except (UnicodeDecodeError, csv.Error) as e:
        raise AttrfitError(f"{path}: not a readable CSV ({e})") from None
    header = list(rows[0]) if rows else []
    column = next((c for c in ("index", "image") if c in header), None)
    if "side" not in header or column is None:
        raise AttrfitError(f"{path}: a partition CSV needs a 'side' column and an 'index' or 'image' column "
                           f"(found: {', '.join(header) or 'nothing'})")
    out: dict[str, list] = {}
    for lineno, r in enumerate(rows, start=2):
        side = (r["side"] or "").strip().lower()
        if side not in SIDES:
            raise AttrfitError(f"{path}: line {lineno}: side '{r['side']}' is not train, val or test")
        value = (r[column] or "").strip()
        out.setdefault(side, []).append(_int(path, lineno, value) if column == "index" else value)
    return out


def _int(path: Path, lineno: int, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise AttrfitError(f"{path}: line {lineno}: index '{value}' is not a whole number") from None


def _rows(path: Path, side: str, items: list, source: Source) -> np.ndarray:
    """Row numbers of ``items``: ints as they are, names looked up in the source's image names."""
    if all(isinstance(x, int) and not isinstance(x, bool) for x in items):
        return np.asarray(items, dtype=np.int64)
    if not all(isinstance(x, str) for x in items):
        raise AttrfitError(f"{path}: the {side} list mixes numbers and names, or holds something else; give "
                           "0-based row numbers or image names")
    index = _name_index(source)
    unknown = [x for x in items if x not in index]
    if unknown:
        raise AttrfitError(f"{path}: the {side} list names {len(unknown)} image(s) that {source.path.name} does not "
                           f"list, e.g. {', '.join(unknown[:3])}")
    return np.array([index[x] for x in items], dtype=np.int64)


def _name_index(source: Source) -> dict[str, int]:
    """Each image by its name, and by its base name where that is unique (a list of bare file names)."""
    index = {n: i for i, n in enumerate(source.images)}
    base: dict[str, list[int]] = {}
    for i, n in enumerate(source.images):
        base.setdefault(n.rsplit("/", 1)[-1], []).append(i)
    for b, rows in base.items():
        if len(rows) == 1:
            index.setdefault(b, rows[0])
    return index
