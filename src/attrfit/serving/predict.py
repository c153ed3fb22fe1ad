"""Predict attributes of new images with a trained checkpoint.

Images go through exactly the preprocessing of the training cache (:func:`attrfit.data.cache.decode_image`:
EXIF rotation, RGB conversion, resize to the checkpoint's size and mode) and the model runs at the
precision the run validated with (:func:`attrfit.evaluation.scoring.inference_precision`), so predicting the
test images reproduces ``attrfit evaluate`` exactly.

Python::

    >>> p = attrfit.load("runs/demo").predict(["a.jpg", "b.jpg"])  # doctest: +SKIP
    >>> p.labels["gender"], p.probs["gender"].shape  # doctest: +SKIP
    (['female', 'male'], (2, 2))

Command line: ``attrfit predict RUN INPUT... [--out FILE]`` takes any number of images; they are
decoded in a thread pool one chunk (256 images) ahead of the model and each row is written as soon
as its chunk is predicted, so memory stays flat. Unreadable files get an ``error`` and the others
are still predicted.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Union

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor, nn

from attrfit.model import checkpoint

from attrfit.data.cache import BadImage, decode_image, parse_size, resize_image, to_rgb
from attrfit.core import arguments
from attrfit.core.errors import AttrfitError
from attrfit.evaluation.calibration import scaled
from attrfit.evaluation.decisions import MOST_PROBABLE, Decide, Decisions, check_rule, most_probable
from attrfit.evaluation.scoring import inference_precision, predict_probs, run_tta
from attrfit.model.precision import check_compiler, guard_bf16, resolve_device
from attrfit.data.schema import Schema

log = logging.getLogger(__name__)

CHUNK = 256  # images decoded ahead of the model; at most two chunks of pixels are held at once
OUTPUT_FORMATS = ("csv", "json")
PROB_DECIMALS = 6  # probabilities in the written output
PREDICT_BATCH = 64  # default batch size of prediction

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]

# ---------------------------------------------------------------- results

@dataclass(frozen=True)
class Predictions:
    """Per-head class probabilities of N images, in input order.

    ``probs[head]`` is N x K float32 (softmax), columns in ``classes[head]`` order.

    Example:
        >>> p = Predictions({"color": ("blue", "red")}, {"color": np.array([[0.8, 0.2]], np.float32)})
        >>> p.labels["color"], p.rows()
        (['blue'], [{'color': 'blue', 'color_prob': 0.800000011920929}])
    """

    classes: dict[str, tuple[str, ...]]
    probs: dict[str, np.ndarray]
    decide: Decide = field(default=most_probable, repr=False, compare=False)  # probabilities -> labels

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(self.classes)

    def __len__(self) -> int:
        return len(next(iter(self.probs.values()))) if self.probs else 0

    @property
    def index(self) -> dict[str, np.ndarray]:
        """Predicted class index per head (int64, N), by the decision rule :attr:`decide`."""
        return {h: np.asarray(self.decide(h, p), dtype=np.int64) for h, p in self.probs.items()}

    @property
    def labels(self) -> dict[str, list[str]]:
        """Predicted class name per head."""
        return {h: [self.classes[h][k] for k in idx] for h, idx in self.index.items()}

    @property
    def confidence(self) -> dict[str, np.ndarray]:
        """Probability of the predicted class per head (float32, N)."""
        return {h: np.take_along_axis(self.probs[h], idx[:, None], 1)[:, 0] for h, idx in self.index.items()}

    def rows(self, all_probs: bool = False) -> list[dict]:
        """One flat dict per image with the columns of :func:`prediction_columns`."""
        index = self.index  # the decision rule runs once per head
        labels = {h: [self.classes[h][k] for k in idx] for h, idx in index.items()}
        conf = {h: np.take_along_axis(self.probs[h], idx[:, None], 1)[:, 0] for h, idx in index.items()}
        rows = []
        for i in range(len(self)):
            row = {}
            for h in self.heads:
                row[h] = labels[h][i]
                row[f"{h}_prob"] = float(conf[h][i])
                if all_probs:
                    row.update({f"{h}_prob_{c}": float(p) for c, p in zip(self.classes[h], self.probs[h][i])})
            rows.append(row)
        return rows

    @staticmethod
    def concat(parts: Sequence[Predictions], classes: dict[str, tuple[str, ...]],
               decide: Decide = most_probable) -> Predictions:
        probs = {h: np.concatenate([p.probs[h] for p in parts]) if parts else np.zeros((0, len(c)), np.float32)
                 for h, c in classes.items()}
        return Predictions(classes, probs, decide)


def prediction_columns(schema: Schema, all_probs: bool = False) -> list[str]:
    """Per head: ``head`` (class name), ``head_prob`` and, with ``all_probs``, ``head_prob_CLASS`` for each class."""
    cols = []
    for h in schema.heads:
        cols += [h, f"{h}_prob"] + ([f"{h}_prob_{c}" for c in schema.classes[h]] if all_probs else [])
    if len(set(cols)) != len(cols):
        raise AttrfitError(f"head and class names give duplicate output columns {cols}; rename a head in the CSV")
    return cols


# ---------------------------------------------------------------- the predictor

class Decoded(NamedTuple):
    pixels: np.ndarray | None  # H x W x 3 uint8, None when unreadable
    error: str  # "" when readable


@dataclass
class Predictor:
    """A trained model with the preprocessing and precision of its run. Build with :meth:`from_checkpoint`.

    Example:
        >>> pred = Predictor.from_checkpoint("runs/demo")  # doctest: +SKIP
        >>> pred.predict(["a.jpg", Image.open("b.png"), np.zeros((90, 40, 3), np.uint8)])  # doctest: +SKIP
    """

    model: nn.Module = field(repr=False)  # AttrNet in eval mode on `device`, channels_last
    schema: Schema
    size: tuple[int, int]  # (H, W) every image is resized to
    resize: str  # "stretch" | "pad"
    device: torch.device
    precision: str  # "fp32" | "bf16" | "fp16": what the run validated with, where the device supports it
    checkpoint: str = ""
    tta: bool = False  # average with the mirror image unless a call says otherwise: the run's --tta
    compiled: bool = False  # model is a frozen torch.compile: batches are padded to one size (no recompiles)
    decide: Decide = most_probable  # the decision rule: every label this predictor gives goes through it
    decisions: Decisions | None = None  # the run's fitted rules (decisions.json); None: a run made without them
    rule: str = MOST_PROBABLE  # the name of ``decide``

    @classmethod
    def from_checkpoint(cls, checkpoint_or_run: str | os.PathLike, device: str = "cpu",
                        compile: bool = False, decide: str | None = None) -> Predictor:
        """Load ``best.pt`` of a run folder (or the given checkpoint file) onto ``device`` ('cpu', 'cuda', 'auto').

        ``compile`` runs the model through ``torch.compile`` with frozen weights (BatchNorm folded into the
        convolutions, ReLU fused): faster batches after a compilation of seconds at the first one, and
        probabilities that differ from ``evaluate``'s in the last digits (other rounding). ``decide`` names the
        decision rule (:mod:`attrfit.evaluation.decisions`; None: the run's own), and the probabilities are
        temperature-scaled as the run's decisions.json says.
        """
        from attrfit.model.checkpoint import model_from_checkpoint

        path = checkpoint.resolve(checkpoint_or_run)
        compile = arguments.flag(compile, "compile")
        ckpt = checkpoint.Checkpoint.load(path)
        decisions = Decisions.for_checkpoint(path, ckpt)
        rule = check_rule(decide or (decisions.rule if decisions else MOST_PROBABLE),
                          decisions.rules() if decisions else (MOST_PROBABLE,))
        dev = resolve_device(device)
        model = model_from_checkpoint(ckpt).to(dev).to(memory_format=torch.channels_last)
        size, precision = parse_size(ckpt.size), inference_precision(ckpt, dev)
        guard_bf16(model, precision, dev, size, None, [PREDICT_BATCH])  # batch 1 is always checked too
        if compile:
            model = compile_frozen(model, dev)
        return cls(model, ckpt.schema, size, ckpt.resize, dev, precision, str(path), run_tta(ckpt), compile,
                   decisions.decide(rule) if decisions else most_probable, decisions, rule)


    def spec(self) -> dict:
        """What a caller needs to feed the model: heads, classes, input size and mode, normalisation (0..255 units)."""
        return {
            "heads": list(self.schema.heads),
            "classes": {h: list(c) for h, c in self.schema.classes.items()},
            "size": list(self.size),
            "resize": self.resize,
            "mean": self.model.mean.flatten().tolist(),
            "std": self.model.std.flatten().tolist(),
        }

    def prepare(self, image: ImageLike) -> np.ndarray:
        """One image (path, PIL image or uint8 H x W [x 3|4] array) to the model's H x W x 3 uint8 input.

        Paths go through :func:`attrfit.data.cache.decode_image`, bit for bit as in training; PIL images and
        arrays get the same EXIF rotation, RGB conversion and resize (only the JPEG draft-mode
        shortcut for big files is skipped). Raises BadImage for an unreadable file.
        """
        if isinstance(image, (str, os.PathLike)):
            path = Path(image)
            if not path.is_file():
                raise BadImage("no such file")
            return decode_image(path, self.size, self.resize)
        if isinstance(image, np.ndarray):
            image = _array_to_pil(image)
        if not isinstance(image, Image.Image):
            raise AttrfitError(f"cannot predict a {type(image).__name__}: give image paths, PIL images or uint8 arrays")
        try:
            rgb = to_rgb(ImageOps.exif_transpose(image))
        except (OSError, ValueError) as e:  # a lazily opened, truncated file
            raise BadImage(f"{type(e).__name__}: {e}") from None
        return np.array(resize_image(rgb, self.size, self.resize))

    def predict(self, images: ImageLike | Iterable[ImageLike], batch_size: int = PREDICT_BATCH,
                tta: bool | None = None) -> Predictions:
        """Predictions for images given as paths, PIL images or uint8 arrays (a single one or many).

        An unreadable image raises :class:`AttrfitError` naming it; ``tta`` averages with the mirror image
        (None: :attr:`tta`, which is the run's --tta).

        Example:
            >>> p = attrfit.load("runs/demo").predict("a.jpg")  # doctest: +SKIP
            >>> p.labels["gender"][0], float(p.confidence["gender"][0])  # doctest: +SKIP
            ('female', 0.93)
        """
        arguments.whole(batch_size, "batch_size")
        arguments.flag(tta, "tta", optional=True)
        if not _is_single(images) and not isinstance(images, Iterable):
            raise AttrfitError(f"cannot predict a {type(images).__name__}: give image paths, PIL images or uint8 "
                               "arrays, one or a list")
        items = [images] if _is_single(images) else list(images)
        parts = []
        for start, decoded in prepare_ahead(items, self.prepare, chunk_size(batch_size)):
            for i, d in enumerate(decoded):
                if d.error:
                    raise AttrfitError(f"image {start + i} ({_describe(items[start + i])}) cannot be read: {d.error}")
            parts.append(self.predict_pixels(stack_pixels([d.pixels for d in decoded]), batch_size, tta))
        return Predictions.concat(parts, self.schema.classes, self.decide)

    def predict_pixels(self, x: Tensor, batch_size: int = PREDICT_BATCH, tta: bool | None = None) -> Predictions:
        """Predictions for already prepared images: uint8 N x 3 x H x W at :attr:`size`."""
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != self.size:
            raise AttrfitError(f"expected images N x 3 x {self.size[0]} x {self.size[1]}, got {tuple(x.shape)}")
        n = len(x)
        if self.compiled and n % batch_size:  # every batch one shape: a new one would compile again
            x = torch.cat([x, x.new_zeros((batch_size - n % batch_size, *x.shape[1:]))])
        probs = predict_probs(self.model, x, self.device, self.precision, batch_size, self.tta if tta is None else tta)
        temperatures = self.decisions.temperatures() if self.decisions else [1.0] * len(probs)
        return self.predictions({h: scaled(p[:n], t) for h, p, t in zip(self.schema.heads, probs, temperatures)})

    def predictions(self, probs: dict[str, np.ndarray]) -> Predictions:
        """Given probabilities (per head N x K, e.g. a track's average) under this predictor's decision rule."""
        return Predictions(self.schema.classes, probs, self.decide)

    def columns(self, all_probs: bool = False) -> list[str]:
        """The prediction columns of :meth:`Predictions.rows` (:func:`prediction_columns`)."""
        return prediction_columns(self.schema, all_probs)

    def plan_boxes(self, frames, boxes, *, weight: str = "area", context: bool = True,
                   batch_size: int = PREDICT_BATCH, tta: bool | None = None, all_probs: bool = False):
        """A checked :class:`attrfit.serving.boxes.BoxJob` (see :meth:`predict_boxes`); its ``stream()`` yields
        the rows one by one, which is how the command line keeps memory flat."""
        from attrfit.serving.boxes import plan_boxes
        from attrfit.serving.box_crops import WEIGHTS, BoxOptions

        arguments.choice(weight, WEIGHTS, "weight")
        arguments.whole(batch_size, "batch_size")
        for value, what in ((context, "context"), (all_probs, "all_probs")):
            arguments.flag(value, what)
        arguments.flag(tta, "tta", optional=True)
        options = BoxOptions(weight, context, batch_size, tta, all_probs, chunk_size(batch_size))
        return plan_boxes(self, frames, boxes, options)

    def predict_boxes(self, frames, boxes, *, weight: str = "area", context: bool = True,
                      batch_size: int = PREDICT_BATCH, tta: bool | None = None, all_probs: bool = False,
                      progress: bool = False):
        """Attributes of the people in a video: per box and per track, from a detector's or tracker's boxes.

        ``frames``: a folder of numbered frames, a video file (needs the ``video`` extra), a list of images
        (frame i + 1 is item i) or a dict {frame: image}; for a CSV of boxes, the folder its image paths are
        relative to (None: the CSV's folder). ``boxes``: a MOTChallenge text file (``frame,id,x,y,w,h[,conf]``),
        a CSV (``image_path,x,y,w,h[,track_id][,conf]``) or MOT-layout rows. ``weight``: how a box counts in
        its track's average (``area`` inside the frame, ``confidence``, ``equal``); ``context``: in pad mode,
        the margins around a box show the frame (else grey). Returns a :class:`attrfit.serving.boxes.BoxResults`
        with the rows ``attrfit predict --boxes`` writes. Bad input raises :class:`AttrfitError` naming file and line.

        Example:
            >>> res = attrfit.load("runs/x").predict_boxes("video.mp4", "tracks.txt")  # doctest: +SKIP
            >>> res.track(3)["gender"], res.track(3)["first_frame"], res.track(3)["boxes"]  # doctest: +SKIP
            ('female', 12, 140)
        """
        from attrfit.serving.boxes import collect

        arguments.flag(progress, "progress")
        job = self.plan_boxes(frames, boxes, weight=weight, context=context, batch_size=batch_size, tta=tta,
                              all_probs=all_probs)
        return collect(job, progress)


def compile_frozen(model: nn.Module, device: torch.device) -> nn.Module:
    """``torch.compile`` of an eval-mode model with its weights frozen as constants (inference only).

    Measured on PETA at 128x64, batch 64 (bench/inference.py): 1.1-1.3x the eager images/s on an AMD EPYC.
    """
    check_compiler(device)
    return torch.compile(model.eval(), options={"freezing": True})


def stack_pixels(pixels: list[np.ndarray]) -> Tensor:
    """H x W x 3 arrays -> uint8 N x 3 x H x W (a channels_last view, which is what the model runs on)."""
    return torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2)


def chunk_size(batch_size: int) -> int:
    """At least CHUNK images, a whole number of batches."""
    if batch_size < 1:
        raise AttrfitError(f"batch size must be at least 1, got {batch_size}")
    return batch_size * -(-CHUNK // batch_size)


def prepare_ahead(items: Sequence, prepare: Callable[[object], np.ndarray], chunk: int,
                  workers: int | None = None) -> Iterator[tuple[int, list[Decoded]]]:
    """(start, decoded chunk) in order, decoding the next chunk in threads while the caller works on this one."""
    workers = workers or min(8, (os.cpu_count() or 1) + 1)

    def one(item) -> Decoded:
        try:
            return Decoded(prepare(item), "")
        except BadImage as e:
            return Decoded(None, str(e))

    with ThreadPoolExecutor(workers) as pool:  # Pillow releases the GIL while decoding
        starts = iter(range(0, len(items), chunk))
        pending = deque()
        for start in starts:
            pending.append((start, [pool.submit(one, it) for it in items[start : start + chunk]]))
            if len(pending) < 2:
                continue
            start0, futures = pending.popleft()
            yield start0, [f.result() for f in futures]
        for start0, futures in pending:
            yield start0, [f.result() for f in futures]


def _is_single(images) -> bool:
    return isinstance(images, (str, os.PathLike, Image.Image)) or (isinstance(images, np.ndarray) and images.ndim <= 3)


def _array_to_pil(a: np.ndarray) -> Image.Image:
    if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise AttrfitError(
            f"an image array must be uint8 H x W, H x W x 3 (RGB) or H x W x 4 (RGBA), got {a.dtype} {a.shape}"
        )
    return Image.fromarray(np.ascontiguousarray(a))


def _describe(item) -> str:
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    if isinstance(item, np.ndarray):
        return f"array {item.shape}"
    return type(item).__name__
