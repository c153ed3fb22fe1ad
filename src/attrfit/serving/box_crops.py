"""Box crops, chunk by chunk: each frame decoded once, in order, its boxes cut with the run's crop rule in
threads, one chunk of boxes ahead of the model (:mod:`attrfit.serving.boxes`)."""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from attrfit.core.errors import AttrfitError
from attrfit.data.boxes import BoxTable
from attrfit.data.cache import BadImage
from attrfit.data.crop import crop_pixels
from attrfit.data.frames import FrameSource, Loader
from attrfit.data.table import Schema

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


def missing_frame(table: BoxTable, source: FrameSource, frame_index: int) -> None:
    i = table.first_of_frame(frame_index)
    key = table.frames[frame_index]
    what = f"image {key} is not in {source.name}" if table.kind == "csv" else \
        f"frame {key} is not in {source.name} ({source.describe()})"
    raise AttrfitError(f"{table.where(i)}: {what}")


@dataclass
class Chunk:
    boxes: np.ndarray  # box indices, reading order
    pixels: list[np.ndarray]  # the crops (H x W x 3 uint8) of the boxes without an error, in order
    errors: list[str]  # per box: "" or why it has no prediction
    clipped: np.ndarray  # per box: reaches outside its frame
    visible: np.ndarray  # per box: its area inside the frame, in pixels


def crop_frame(load: Loader, table: BoxTable, idx: np.ndarray, predictor: Model, context: bool) -> Chunk:
    """The crops of boxes ``idx`` of one frame."""
    n = len(idx)
    out = Chunk(idx, [], [""] * n, np.zeros(n, dtype=bool), np.zeros(n))
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


def merge(parts: list[Chunk]) -> Chunk:
    return Chunk(np.concatenate([p.boxes for p in parts]), [a for p in parts for a in p.pixels],
                  [e for p in parts for e in p.errors], np.concatenate([p.clipped for p in parts]),
                  np.concatenate([p.visible for p in parts]))


def chunks(table: BoxTable, source: FrameSource, predictor: Model, opts: BoxOptions,
            workers: int | None = None) -> Iterator[Chunk]:
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
            pending.append(pool.submit(crop_frame, load, table, order[bounds[fi]:bounds[fi + 1]], predictor,
                                       opts.context))
            while len(pending) > 2 * workers or (pending and pending[0].done()):
                parts.append(pending.popleft().result())
                held += len(parts[-1].boxes)
                if held >= target:
                    yield merge(parts)
                    parts, held = [], 0
        parts += [f.result() for f in pending]
    if parts:
        yield merge(parts)
    if not seen.all():  # a video shorter than the boxes say: known only now
        missing_frame(table, source, int(np.flatnonzero(~seen)[0]))


def ahead(items: Iterator, depth: int = 1) -> Iterator:
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
