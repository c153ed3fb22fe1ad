"""Stage 3b: a detector's or tracker's boxes, read and checked before any frame is decoded.

Two formats, told apart by the first line:

- **MOTChallenge text** (what trackers write): ``frame,id,x,y,w,h[,conf,...]`` one box a line,
  commas (or blanks) between fields, frame numbers as in the frames folder or counted from 1 in a
  video, ``id`` the track (negative: a box that belongs to no track, as in MOT's ``det.txt``),
  ``conf`` the detector's confidence (absent: not given). Fields after the seventh are ignored.
- **CSV** with a header holding ``image_path,x,y,w,h`` and optionally ``track_id`` and ``conf``
  (other columns are ignored): one box a row, ``image_path`` relative to the frames folder.

x, y is the top-left corner and w, h the size, in pixels of the frame (fractions allowed).
A malformed line, a number that is not finite, a fractional frame number or a box without a
positive width and height is one error naming the file and the line; so is a list with no box.

The boxes are held as arrays (about 60 bytes a box), so a list of millions of boxes is read
once and then predicted frame by frame in the order the frames are read.

Example:
    >>> t = read_boxes("tracks.txt")  # doctest: +SKIP
    >>> len(t), t.frames[:3], t.where(0)  # doctest: +SKIP
    (4210, (1, 2, 3), 'tracks.txt:1')
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attrfit.core.errors import AttrfitError
from attrfit.data.crop import Box
from attrfit.data.table import IMAGE_COLUMN

BOX_KINDS = ("mot", "csv")
MOT_LAYOUT = "frame,id,x,y,w,h[,conf,...]"
CSV_REQUIRED = (IMAGE_COLUMN, "x", "y", "w", "h")
NO_TRACK = -1


@dataclass(frozen=True)
class BoxTable:
    """N boxes and where they come from. ``frames`` and ``tracks`` hold each distinct key once; a box
    refers to them by index. Frames are in the order they are read (MOT: ascending numbers; CSV: first
    appearance), tracks in order of first appearance (MOT: ints; CSV: strings).

    Example:
        >>> t = boxes_from_rows([(1, 7, 10, 20, 30, 60, 0.9)], "boxes")
        >>> t.frames, t.tracks, t.box(0), t.where(0)
        ((1,), (7,), Box(x=10.0, y=20.0, w=30.0, h=60.0), 'boxes:1')
    """

    source: str  # the file (or a name) for messages
    kind: str  # "mot" | "csv"
    frames: tuple  # distinct frame keys: ints (MOT) or image paths (CSV)
    tracks: tuple  # distinct track ids: ints (MOT) or strings (CSV)
    line: np.ndarray  # int64 N: line number in the source, 1-based
    frame: np.ndarray  # int64 N: index into frames
    track: np.ndarray  # int64 N: index into tracks, NO_TRACK for a box of no track
    xywh: np.ndarray  # float64 N x 4
    conf: np.ndarray  # float64 N, NaN where not given

    def __len__(self) -> int:
        return len(self.line)

    @property
    def frame_column(self) -> str:
        """The output column naming a box's frame: ``frame`` (MOT) or ``image_path`` (CSV)."""
        return "frame" if self.kind == "mot" else IMAGE_COLUMN

    def box(self, i: int) -> Box:
        return Box(*(float(v) for v in self.xywh[i]))

    def where(self, i: int) -> str:
        """``FILE:LINE`` of box ``i``, for messages."""
        return f"{self.source}:{int(self.line[i])}"

    def order(self) -> np.ndarray:
        """Box indices in reading order: by frame, then by line."""
        return np.lexsort((self.line, self.frame))

    def first_of_frame(self, frame_index: int) -> int:
        """The first box (by line) on frame ``frames[frame_index]``."""
        on = np.flatnonzero(self.frame == frame_index)
        return int(on[np.argmin(self.line[on])])


def read_boxes(path: str | Path) -> BoxTable:
    """Read and check a MOTChallenge text file or a CSV of boxes (told apart by its first line).

    Example:
        >>> read_boxes("MOT17-02/gt/gt.txt").kind  # doctest: +SKIP
        'mot'
    """
    path = Path(path)
    if not path.is_file():
        raise AttrfitError(f"--boxes {path}: no such file")
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
            first = f.readline()
            f.seek(0)
            if IMAGE_COLUMN in _fields(first):
                return _read_csv(f, str(path))
            return _read_mot(f, str(path))
    except csv.Error as e:
        raise AttrfitError(f"{path}: not a readable CSV ({e})") from None
    except OSError as e:
        raise AttrfitError(f"cannot read --boxes {path}: {e.strerror or e}") from None


def boxes_from_rows(rows, source: str = "boxes") -> BoxTable:
    """A table from MOT-layout rows (``frame, id, x, y, w, h[, conf, ...]``: a list of tuples or an
    N x 6+ array); line k of messages is row k, counted from 1.

    >>> len(boxes_from_rows(np.array([[1, 1, 0, 0, 10, 20]])))
    1
    """
    try:
        a = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise AttrfitError(f"{source}: boxes must be numbers in the layout {MOT_LAYOUT} ({e})") from None
    if a.ndim != 2 or a.shape[1] < 6:
        raise AttrfitError(f"{source}: boxes must be an N x 6 (or more) table {MOT_LAYOUT}, got shape {a.shape}")
    conf = a[:, 6] if a.shape[1] > 6 else np.full(len(a), np.nan)
    return _mot_table(source, np.arange(1, len(a) + 1), a[:, 0], a[:, 1], a[:, 2:6], conf)


def _fields(line: str) -> list[str]:
    return [v.strip() for v in (line.split(",") if "," in line else line.split())]


def _read_mot(f, source: str) -> BoxTable:
    lines, values = [], []
    for n, text in enumerate(f, start=1):
        if not text.strip():
            continue
        fields = _fields(text)
        if len(fields) < 6:
            raise AttrfitError(f"{source}:{n}: expected at least 6 fields {MOT_LAYOUT}, got {len(fields)}: "
                               f"{text.strip()[:80]!r}")
        values.append([_number(v, name, source, n) for v, name in zip(fields[:7], ("frame", "id", *"xywh", "conf"))])
        lines.append(n)
    a = np.array([v + [math.nan] * (7 - len(v)) for v in values], dtype=np.float64).reshape(-1, 7)
    return _mot_table(source, np.array(lines, dtype=np.int64), a[:, 0], a[:, 1], a[:, 2:6], a[:, 6])


def _number(text: str, name: str, source: str, line: int) -> float:
    try:
        return float(text)
    except ValueError:
        raise AttrfitError(f"{source}:{line}: {name} is {text[:40]!r}, not a number") from None


def _mot_table(source: str, lines: np.ndarray, frame: np.ndarray, track: np.ndarray, xywh: np.ndarray,
               conf: np.ndarray) -> BoxTable:
    _check_numbers(source, lines, {"frame": frame, "id": track, "x": xywh[:, 0], "y": xywh[:, 1],
                                   "w": xywh[:, 2], "h": xywh[:, 3]}, conf)
    for name, v in (("frame", frame), ("id", track)):
        bad = np.flatnonzero(v != np.round(v))
        if len(bad):
            raise AttrfitError(f"{source}:{lines[bad[0]]}: {name} {v[bad[0]]:g} is not a whole number")
    frame, track = frame.astype(np.int64), track.astype(np.int64)
    frames, frame_index = np.unique(frame, return_inverse=True)  # read in ascending frame order
    has_track = track >= 0
    ids, first, inverse = np.unique(track[has_track], return_index=True, return_inverse=True)
    appearance = np.argsort(first, kind="stable")  # tracks numbered in the order they first appear
    rank = np.empty(len(ids), dtype=np.int64)
    rank[appearance] = np.arange(len(ids))
    track_index = np.full(len(track), NO_TRACK, dtype=np.int64)
    track_index[has_track] = rank[inverse]
    by_appearance = ids[appearance]
    return _finish(BoxTable(source, "mot", tuple(int(v) for v in frames), tuple(int(v) for v in by_appearance),
                            lines, frame_index.astype(np.int64), track_index, np.ascontiguousarray(xywh), conf))


def _check_numbers(source: str, lines: np.ndarray, columns: dict[str, np.ndarray], conf: np.ndarray) -> None:
    for name, v in [*columns.items(), ("conf", conf)]:
        bad = np.flatnonzero(~np.isfinite(v) if name != "conf" else np.isinf(v))
        if len(bad):
            raise AttrfitError(f"{source}:{lines[bad[0]]}: {name} is {v[bad[0]]}, not a finite number")
    w, h = columns["w"], columns["h"]
    bad = np.flatnonzero((w <= 0) | (h <= 0))
    if len(bad):
        i = bad[0]
        raise AttrfitError(f"{source}:{lines[i]}: the box is {w[i]:g} x {h[i]:g} pixels; a box needs a positive "
                           "width and height")


def _read_csv(f, source: str) -> BoxTable:
    reader = csv.DictReader(f)
    missing = [c for c in CSV_REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise AttrfitError(f"{source}:1: no {', '.join(missing)} column(s); a CSV of boxes has the columns "
                           f"{','.join(CSV_REQUIRED)}[,track_id][,conf]")
    frames: dict[str, int] = {}
    tracks: dict[str, int] = {}
    lines, frame, track, values = [], [], [], []
    for row in reader:
        n = reader.line_num
        name = (row[IMAGE_COLUMN] or "").strip()
        if not name:
            raise AttrfitError(f"{source}:{n}: empty {IMAGE_COLUMN}")
        numbers = [_number((row[c] or "").strip(), c, source, n) for c in "xywh"]
        conf_text = (row.get("conf") or "").strip()
        tid = (row.get("track_id") or "").strip()
        lines.append(n)
        frame.append(frames.setdefault(name, len(frames)))
        track.append(tracks.setdefault(tid, len(tracks)) if tid else NO_TRACK)
        values.append([*numbers, _number(conf_text, "conf", source, n) if conf_text else math.nan])
    a = np.array(values, dtype=np.float64).reshape(-1, 5)
    lines_a = np.array(lines, dtype=np.int64)
    _check_numbers(source, lines_a, {"x": a[:, 0], "y": a[:, 1], "w": a[:, 2], "h": a[:, 3]}, a[:, 4])
    return _finish(BoxTable(source, "csv", tuple(frames), tuple(tracks), lines_a, np.array(frame, dtype=np.int64),
                            np.array(track, dtype=np.int64), np.ascontiguousarray(a[:, :4]), a[:, 4]))


def _finish(table: BoxTable) -> BoxTable:
    if len(table) == 0:
        raise AttrfitError(f"{table.source}: no boxes in it, so no frame to predict on; give a list of boxes "
                           f"({MOT_LAYOUT}, or a CSV with {','.join(CSV_REQUIRED)})")
    return table


def track_spans(table: BoxTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per track (index into ``table.tracks``): its box count and its first and last frame (indices into
    ``table.frames``, which are in reading order).

    >>> track_spans(boxes_from_rows([(1, 5, 0, 0, 1, 1), (3, 5, 0, 0, 1, 1), (2, 5, 0, 0, 1, 1)]))
    (array([3]), array([0]), array([2]))
    """
    k = len(table.tracks)
    has = table.track >= 0
    t, fr = table.track[has], table.frame[has]
    count = np.bincount(t, minlength=k)
    first = np.full(k, np.iinfo(np.int64).max)
    last = np.full(k, -1)
    np.minimum.at(first, t, fr)
    np.maximum.at(last, t, fr)
    return count, first, last


def frame_keys_missing(table: BoxTable, have: Sequence | set) -> list[int]:
    """Indices into ``table.frames`` of the frames that ``have`` lacks."""
    have = set(have)
    return [i for i, key in enumerate(table.frames) if key not in have]
