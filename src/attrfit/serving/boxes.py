"""Stage 10b: attributes of the people in a video: a detector's boxes in, one answer per box and per track out.

A list of boxes (:mod:`attrfit.data.boxes`: MOTChallenge text or a CSV) and the frames it refers to
(:mod:`attrfit.data.frames`: a folder, a video, images in memory) are checked first: every frame a
box names must be there, or one error names the file and line of the first box on a missing frame
(for a video, known once it is decoded). Then each frame is decoded once, in order, and each of its
boxes is cut with the run's own geometry (:func:`attrfit.data.crop.crop_pixels`: the rule training's
resize uses), in threads, one chunk of boxes ahead of the model; the boxes of several frames go
through the model together.

Per box: its probabilities and labels (under the predictor's decision rule). Per track: the
probabilities of its boxes averaged, weighted by each box's area inside its frame (``area``, the
default: a bigger box has more pixels to go on), by the detector's confidence (``confidence``), or
not (``equal``); the label is the decision rule applied to that average. A track's row comes as soon
as its last box is predicted, so memory holds only the tracks still running: it stays flat for a
video of any length.

A box that reaches outside its frame is kept: the part outside is grey (``PAD_VALUE``) and the box
is counted as ``clipped``; a box with no pixel inside its frame gets an ``error`` instead of a
prediction, as does every box on a frame file that cannot be read.

Example:
    >>> res = attrfit.load("runs/x").predict_boxes("MOT17-02/img1", "MOT17-02/gt/gt.txt")  # doctest: +SKIP
    >>> res.tracks[0]["gender"], res.tracks[0]["boxes"]  # doctest: +SKIP
    ('female', 600)
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import torch

from attrfit.core.errors import AttrfitError
from attrfit.core.progress import progress_bar
from attrfit.data.boxes import BoxTable, boxes_from_rows, read_boxes, track_spans
from attrfit.data.cache import BadImage
from attrfit.data.crop import crop_pixels
from attrfit.data.frames import FrameSource, Loader, open_frames
from attrfit.data.table import Schema

log = logging.getLogger(__name__)

WEIGHTS = ("area", "confidence", "equal")


class Model(Protocol):
    """What this module needs of a model: :class:`attrfit.serving.predict.Predictor` (which imports this module
    for its ``predict_boxes``, so it is named here only by what it does)."""

    schema: Schema
    size: tuple[int, int]
    resize: str

    def predict_pixels(self, x: torch.Tensor, batch_size: int, tta: bool | None): ...

    def predictions(self, probs: dict[str, np.ndarray]): ...

    def columns(self, all_probs: bool = False) -> list[str]: ...


@dataclass(frozen=True)
class BoxOptions:
    """How boxes are predicted: ``weight`` of a box in its track's average (area | confidence | equal),
    ``context`` (pad mode: the margins around a box show the frame, else grey), batch size, TTA, all probs,
    and ``chunk``, the crops cut ahead of the model (a whole number of batches)."""

    weight: str = "area"
    context: bool = True
    batch_size: int = 64
    tta: bool | None = None
    all_probs: bool = False
    chunk: int = 256

    def __post_init__(self):
        if self.weight not in WEIGHTS:
            raise AttrfitError(f"track weight '{self.weight}' unknown; choose one of {', '.join(WEIGHTS)}")
        if self.batch_size < 1 or self.chunk < 1:
            raise AttrfitError(f"batch size must be at least 1, got {self.batch_size}")


class BoxRow(NamedTuple):
    row: dict  # the columns of box_columns


class TrackRow(NamedTuple):
    row: dict  # the columns of track_columns


@dataclass
class BoxStats:
    """Counts a run over boxes keeps, for the summary line and the API."""

    boxes: int = 0
    failed: int = 0
    clipped: int = 0
    first_clipped: str = ""  # FILE:LINE of the first clipped box


@dataclass(frozen=True)
class BoxResults:
    """What :meth:`attrfit.serving.predict.Predictor.predict_boxes` returns: the rows the command line writes.

    ``boxes``: one dict per box in reading order (by frame, then line), the columns of :func:`box_columns`;
    ``tracks``: one dict per track in the order the tracks end, the columns of :func:`track_columns`.
    """

    boxes: list[dict]
    tracks: list[dict]
    stats: BoxStats

    def track(self, track_id) -> dict:
        """The row of one track, by its id as in the box list."""
        for row in self.tracks:
            if row["track_id"] == track_id:
                return row
        raise KeyError(track_id)


def box_columns(table: BoxTable, model: Model, all_probs: bool = False) -> list[str]:
    """Per box: its frame (``frame``, or ``image_path`` for a CSV), track, line, box, conf, the prediction
    columns, ``clipped`` (it reaches outside its frame) and ``error``."""
    return [table.frame_column, "track_id", "line", "x", "y", "w", "h", "conf", *model.columns(all_probs),
            "clipped", "error"]


def track_columns(model: Model, all_probs: bool = False) -> list[str]:
    """Per track: id, first and last frame, its boxes and how many were predicted, the weight they add up to,
    the prediction columns of the averaged probabilities, and ``error``."""
    return ["track_id", "first_frame", "last_frame", "boxes", "predicted", "weight", *model.columns(all_probs),
            "error"]


# ---------------------------------------------------------------- the job: checked before any frame is decoded

@dataclass
class BoxJob:
    """A list of boxes on a frame source, checked; :meth:`stream` predicts it."""

    predictor: Model
    table: BoxTable
    source: FrameSource
    options: BoxOptions
    stats: BoxStats = field(default_factory=BoxStats)

    def stream(self, progress: bool = False) -> Iterator[BoxRow | TrackRow]:
        """Box rows in reading order, each track's row once its last box is predicted."""
        self.stats = BoxStats()
        tracks = _Tracks(self.table, self.predictor, self.options)
        with progress_bar(total=len(self.table), desc="predicting boxes", enabled=progress, unit="box") as bar:
            for chunk in _ahead(_chunks(self.table, self.source, self.predictor, self.options)):
                yield from self._predict_chunk(chunk, tracks)
                bar.update(len(chunk.boxes))
        self._log_summary()

    def crops(self) -> Iterator[_Chunk]:
        """The input stage alone: the frames decoded and their boxes cut, chunk by chunk, no model (for timing)."""
        return _chunks(self.table, self.source, self.predictor, self.options)

    def _predict_chunk(self, chunk: _Chunk, tracks: _Tracks) -> Iterator[BoxRow | TrackRow]:
        p, opts = self.predictor, self.options
        good = np.array([not e for e in chunk.errors], dtype=bool)
        preds = None
        if chunk.pixels:
            x = torch.from_numpy(np.stack(chunk.pixels)).permute(0, 3, 1, 2)  # uint8 N x 3 x H x W, channels_last
            preds = p.predict_pixels(x, opts.batch_size, opts.tta)
        rows = iter(preds.rows(opts.all_probs) if preds else [])
        blank = dict.fromkeys(p.columns(opts.all_probs))
        for k, i in enumerate(chunk.boxes):
            yield BoxRow(self._box_row(i, blank if chunk.errors[k] else next(rows), chunk, k))
        if preds is not None:
            tracks.add(chunk.boxes[good], preds.probs, self._weights(chunk.boxes[good], chunk.visible[good]))
        yield from (TrackRow(r) for r in tracks.seen(chunk.boxes))

    def _box_row(self, i: int, prediction: dict, chunk: _Chunk, k: int) -> dict:
        t = self.table
        s = self.stats
        s.boxes += 1
        s.failed += bool(chunk.errors[k])
        if chunk.clipped[k]:
            s.clipped += 1
            s.first_clipped = s.first_clipped or t.where(i)
        x, y, w, h = (_plain(v) for v in t.xywh[i])
        conf = None if math.isnan(t.conf[i]) else _plain(t.conf[i])
        track = t.tracks[t.track[i]] if t.track[i] >= 0 else None
        return {t.frame_column: t.frames[t.frame[i]], "track_id": track, "line": int(t.line[i]), "x": x, "y": y,
                "w": w, "h": h, "conf": conf, **prediction, "clipped": bool(chunk.clipped[k]), "error": chunk.errors[k]}

    def _weights(self, boxes: np.ndarray, visible: np.ndarray) -> np.ndarray:
        if self.options.weight == "area":
            return visible
        if self.options.weight == "confidence":
            return self.table.conf[boxes]
        return np.ones(len(boxes))

    def _log_summary(self) -> None:
        s = self.stats
        if s.clipped:
            log.warning("%d of %d boxes reach outside their frame (first: %s); the part outside is filled grey",
                        s.clipped, s.boxes, s.first_clipped)
        if s.failed:
            log.warning("%d of %d boxes could not be predicted (their rows say why)", s.failed, s.boxes)


def plan_boxes(predictor: Model, frames, boxes, options: BoxOptions) -> BoxJob:
    """Read and check ``boxes`` (a file, or MOT-layout rows) against ``frames`` (a folder, a video file, a list
    or dict of images; for a CSV of boxes, the folder its paths are relative to, None: the CSV's folder).

    >>> job = plan_boxes(predictor, "img1", "gt.txt", BoxOptions())  # doctest: +SKIP
    """
    table = read_boxes(boxes) if isinstance(boxes, (str, os.PathLike)) else boxes_from_rows(boxes)
    if table.kind == "csv":
        if frames is None:
            frames = Path(table.source).parent
        elif isinstance(frames, (str, os.PathLike)) and Path(frames).is_file():
            raise AttrfitError(f"{table.source} names image files (a CSV of boxes); give the folder they are in as "
                               "the frames, or boxes in the MOT layout (frame,id,x,y,w,h) for a video")
    elif frames is None:
        raise AttrfitError(f"{table.source}: boxes in the MOT layout number frames; give the frames (a folder of "
                           "numbered images or a video file)")
    source = open_frames(frames, csv_boxes=table.kind == "csv" and not _in_memory(frames))
    _check_frames(table, source)
    if options.weight == "confidence":
        _check_confidence(table)
    return BoxJob(predictor, table, source, options)


def collect(job: BoxJob, progress: bool = False) -> BoxResults:
    """Every box's row and every track's row of ``job``, in memory (the command line streams them to files)."""
    box_rows, track_rows = [], []
    for item in job.stream(progress):
        (box_rows if isinstance(item, BoxRow) else track_rows).append(item.row)
    return BoxResults(box_rows, track_rows, job.stats)


def _in_memory(frames) -> bool:
    return not isinstance(frames, (str, os.PathLike))


def _check_frames(table: BoxTable, source: FrameSource) -> None:
    missing = source.missing(table.frames)
    if missing:
        _missing_frame(table, source, missing[0])


def _missing_frame(table: BoxTable, source: FrameSource, frame_index: int) -> None:
    i = table.first_of_frame(frame_index)
    key = table.frames[frame_index]
    what = f"image {key} is not in {source.name}" if table.kind == "csv" else \
        f"frame {key} is not in {source.name} ({source.describe()})"
    raise AttrfitError(f"{table.where(i)}: {what}")


def _check_confidence(table: BoxTable) -> None:
    bad = np.flatnonzero((table.track >= 0) & ~(table.conf > 0))
    if len(bad):
        i = int(bad[np.argmin(table.line[bad])])
        raise AttrfitError(f"{table.where(i)}: conf is {'not given' if math.isnan(table.conf[i]) else table.conf[i]}; "
                           "weighting tracks by confidence needs a positive conf on every box of a track "
                           "(trackers write -1 for none): use --track-weight area")


def _plain(v: float):
    """A coordinate as written: 12 rather than 12.0."""
    v = float(v)
    return int(v) if v.is_integer() else v


# ---------------------------------------------------------------- crops, chunk by chunk

@dataclass
class _Chunk:
    boxes: np.ndarray  # box indices, reading order
    pixels: list[np.ndarray]  # the crops (H x W x 3 uint8) of the boxes without an error, in order
    errors: list[str]  # per box: "" or why it has no prediction
    clipped: np.ndarray  # per box: reaches outside its frame
    visible: np.ndarray  # per box: its area inside the frame, in pixels


def _crop_frame(load: Loader, table: BoxTable, idx: np.ndarray, predictor: Model, context: bool) -> _Chunk:
    """The crops of boxes ``idx`` of one frame."""
    n = len(idx)
    out = _Chunk(idx, [], [""] * n, np.zeros(n, dtype=bool), np.zeros(n))
    try:
        im = load()
    except BadImage as e:
        out.errors = [f"the frame cannot be read: {e}"] * n
        return out
    fw, fh = im.size
    for k, i in enumerate(idx):
        x, y, w, h = table.xywh[i]
        out.clipped[k] = x < 0 or y < 0 or x + w > fw or y + h > fh
        out.visible[k] = max(0.0, min(x + w, fw) - max(x, 0.0)) * max(0.0, min(y + h, fh) - max(y, 0.0))
        try:
            out.pixels.append(crop_pixels(im, table.box(i), predictor.size, predictor.resize, context))
        except ValueError:
            out.errors[k] = f"the box lies outside its frame ({fw} x {fh})"
    return out


def _merge(parts: list[_Chunk]) -> _Chunk:
    return _Chunk(np.concatenate([p.boxes for p in parts]), [a for p in parts for a in p.pixels],
                  [e for p in parts for e in p.errors], np.concatenate([p.clipped for p in parts]),
                  np.concatenate([p.visible for p in parts]))


def _chunks(table: BoxTable, source: FrameSource, predictor: Model, opts: BoxOptions,
            workers: int | None = None) -> Iterator[_Chunk]:
    """Chunks of at least ``opts.chunk`` crops, frames decoded once in reading order, cropped in threads."""
    order = table.order()
    frame_of = table.frame[order]
    bounds = np.searchsorted(frame_of, np.arange(len(table.frames) + 1))
    index = {key: fi for fi, key in enumerate(table.frames)}
    workers = workers or min(8, (os.cpu_count() or 1) + 1)
    target = opts.chunk
    seen = np.zeros(len(table.frames), dtype=bool)
    parts, held = [], 0
    with ThreadPoolExecutor(workers) as pool:  # Pillow and FFmpeg release the GIL while they work
        pending: deque = deque()
        for key, load in source.read(table.frames):
            fi = index[key]
            seen[fi] = True
            pending.append(pool.submit(_crop_frame, load, table, order[bounds[fi]:bounds[fi + 1]], predictor,
                                       opts.context))
            while len(pending) > 2 * workers or (pending and pending[0].done()):
                parts.append(pending.popleft().result())
                held += len(parts[-1].boxes)
                if held >= target:
                    yield _merge(parts)
                    parts, held = [], 0
        parts += [f.result() for f in pending]
    if parts:
        yield _merge(parts)
    if not seen.all():  # a video shorter than the boxes say: known only now
        _missing_frame(table, source, int(np.flatnonzero(~seen)[0]))


def _ahead(items: Iterator, depth: int = 1) -> Iterator:
    """``items`` produced in a thread, up to ``depth`` ahead of the caller, so decoding and cropping overlap the
    model; the producer's exception is raised here, and closing this generator stops the producer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as e:  # handed to the caller, raised there
            put((None, e))
        finally:
            close = getattr(items, "close", None)
            if close:
                close()

    thread = threading.Thread(target=produce, name="attrfit-crops", daemon=True)
    thread.start()
    try:
        while True:
            item, error = q.get()
            if error is not None:
                raise error
            if item is end:
                return
            yield item
    finally:
        stop.set()
        thread.join()


# ---------------------------------------------------------------- tracks

class _Tracks:
    """Weighted sums of the probabilities of the tracks still running; a track's row once its last box is in."""

    def __init__(self, table: BoxTable, predictor: Model, opts: BoxOptions):
        self.table, self.predictor, self.opts = table, predictor, opts
        self.count, self.first, self.last = track_spans(table)
        self.done = np.zeros(len(table.tracks), dtype=np.int64)  # boxes seen per track
        self.predicted = np.zeros(len(table.tracks), dtype=np.int64)
        self.sums: dict[int, dict[str, np.ndarray]] = {}  # running tracks only
        self.weight: dict[int, float] = {}

    def add(self, boxes: np.ndarray, probs: dict[str, np.ndarray], weights: np.ndarray) -> None:
        """Add predicted boxes (their probabilities, row k for boxes[k]) to their tracks' sums."""
        t = self.table.track[boxes]
        on = t >= 0
        if not on.any():
            return
        ids, inverse = np.unique(t[on], return_inverse=True)
        w = np.asarray(weights, dtype=np.float64)[on]
        for h, p in probs.items():
            sums = np.zeros((len(ids), p.shape[1]))
            np.add.at(sums, inverse, p[on].astype(np.float64) * w[:, None])
            for j, tid in enumerate(ids):
                acc = self.sums.setdefault(int(tid), {})
                acc[h] = acc.get(h, 0.0) + sums[j]
        for j, tid in enumerate(ids):
            self.weight[int(tid)] = self.weight.get(int(tid), 0.0) + float(w[inverse == j].sum())
        np.add.at(self.predicted, t[on], 1)

    def seen(self, boxes: np.ndarray) -> list[dict]:
        """Count boxes as seen; the rows of the tracks whose last box this was, in the order they ended."""
        rows = []
        for i in boxes:
            t = int(self.table.track[i])
            if t < 0:
                continue
            self.done[t] += 1
            if self.done[t] == self.count[t]:
                rows.append(self._row(t))
        return rows

    def _row(self, t: int) -> dict:
        table, p = self.table, self.predictor
        sums, weight = self.sums.pop(t, None), self.weight.pop(t, 0.0)
        row = {"track_id": table.tracks[t], "first_frame": table.frames[self.first[t]],
               "last_frame": table.frames[self.last[t]], "boxes": int(self.count[t]),
               "predicted": int(self.predicted[t]), "weight": weight}
        if sums is None or weight <= 0:
            blank = dict.fromkeys(p.columns(self.opts.all_probs))
            return {**row, **blank, "error": f"none of its {self.count[t]} boxes could be predicted"}
        mean = {h: (s / weight)[None].astype(np.float32) for h, s in sums.items()}
        return {**row, **p.predictions(mean).rows(self.opts.all_probs)[0], "error": ""}
