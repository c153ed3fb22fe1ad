"""Checkpoints: versioned dicts, written atomically, verified by checksum on load.

File layout: ``MAGIC`` (8 bytes) + sha256 of the payload (32 bytes) + the payload
(``torch.save`` of a plain dict). A write goes to a temp file in the same folder, is
fsynced, then renamed over the target, so a crash leaves either the old file or the new
one, never half of one. The previous ``last.pt`` is kept as ``last.prev.pt`` so that a
damaged latest checkpoint falls back to the one before.

On disk the payload is a plain dict (``format``, ``attrfit_version`` and the fields of
:class:`Checkpoint`, ``progress``, ``split`` and ``data`` as dicts). :class:`Checkpoint` is
the one reader and writer of its keys: code reads ``Checkpoint.load(path).schema``, never
``payload["schema"]``. :func:`load` returns the raw verified payload (tools and tests).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from attrfit.core.version import __version__

from attrfit.core import arguments, files
from attrfit.core.errors import AttrfitError
from attrfit.data.split import SplitRef
from attrfit.data.schema import Schema
from attrfit.model.net import ModelConfig, build_model, saved_fields

log = logging.getLogger(__name__)

MAGIC = b"ATTRFIT1"
FORMAT = 1


class CorruptCheckpoint(AttrfitError):
    """A checkpoint file that is truncated or fails its checksum."""


def save(payload: dict, path: str | Path, keep_previous: bool = False) -> Path:
    """Atomically write ``payload`` to ``path``; with ``keep_previous`` the old file becomes ``*.prev.pt``."""
    path = Path(path)
    payload = {"format": FORMAT, "attrfit_version": __version__, **payload}
    buf = io.BytesIO()
    torch.save(payload, buf)
    body = buf.getvalue()
    data = MAGIC + hashlib.sha256(body).digest() + body
    _remove_stale_temps(path.parent)
    hint = "the previous checkpoint is untouched (free disk space or check permissions, then --resume)"
    # the new file is complete on disk before the old one moves aside
    aside = (lambda: _move_aside(path, hint)) if keep_previous and path.exists() else None
    with files.atomic_open(path, "checkpoint", hint=hint, before_replace=aside) as f:
        f.write(data)
    return path


def _move_aside(path: Path, hint: str) -> None:
    try:
        os.replace(path, previous_of(path))
    except OSError as e:
        raise files.write_error(e, previous_of(path), "checkpoint", hint) from None


def _remove_stale_temps(folder: Path) -> None:
    """Delete temp files that killed writers left in ``folder`` (the run lock allows one writer per run folder)."""
    for stale in folder.glob(".*.pt.tmp*"):
        try:
            stale.unlink()
        except OSError:
            pass  # the write below reports a folder that cannot be written to


def previous_of(path: Path) -> Path:
    return path.with_name(path.stem + ".prev" + path.suffix)


def load(path: str | Path, map_location="cpu") -> dict:
    """Read and verify a checkpoint; raise CorruptCheckpoint when it is damaged."""
    path = Path(path)
    if not path.is_file():
        raise AttrfitError(f"{path}: no such checkpoint")
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        raise CorruptCheckpoint(f"{path}: not an attrfit checkpoint (or truncated to {len(data)} bytes)")
    digest, body = data[len(MAGIC) : len(MAGIC) + 32], data[len(MAGIC) + 32 :]
    if hashlib.sha256(body).digest() != digest:
        raise CorruptCheckpoint(f"{path}: checksum mismatch, the file is truncated or damaged")
    ckpt = torch.load(io.BytesIO(body), map_location=map_location, weights_only=True)
    if ckpt.get("format") != FORMAT:
        raise AttrfitError(f"{path}: checkpoint format {ckpt.get('format')} is not supported by attrfit {__version__}")
    return ckpt


def load_with_fallback(path: str | Path, map_location="cpu") -> tuple[dict, Path]:
    """Load ``path``; if it is damaged or missing, fall back to its ``.prev`` copy and say so."""
    path = Path(path)
    try:
        return load(path, map_location), path
    except AttrfitError as e:
        prev = previous_of(path)
        if not prev.is_file():
            raise
        log.warning("%s; falling back to the previous checkpoint %s", e, prev)
        return load(prev, map_location), prev


def resolve(ckpt_or_run: str | Path, name: str = "best.pt") -> Path:
    """A checkpoint path, or a run folder -> its ``name`` checkpoint."""
    p = arguments.path(ckpt_or_run, "the checkpoint or run folder")
    if p.is_dir():
        p = p / name
    if not p.is_file():
        raise AttrfitError(f"{p}: no such checkpoint (give a .pt file or a run folder)")
    return p


def model_from_checkpoint(ckpt: Checkpoint, use_ema: bool = True) -> nn.Module:
    """Rebuild the model from the arguments stored in a checkpoint and load its weights (EMA if present)."""
    model = ckpt.model_args.build()
    state = ckpt.ema if use_ema and ckpt.ema is not None else ckpt.model
    model.load_state_dict(state)
    return model.eval()


# ---------------------------------------------------------------- the typed contract

@dataclass
class Progress:
    """Where training stands; the loop advances it, checkpoints carry it."""

    epoch: int = 0  # completed epochs
    step: int = 0  # global optimizer steps
    epoch_step: int = 0  # steps done inside the current (incomplete) epoch
    best_value: float = -math.inf
    best_epoch: int = -1
    sums: dict = field(default_factory=dict)  # running per-epoch sums (loss, correct, counts)
    wall_time: float = 0.0  # seconds spent training, over all sessions

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ModelArgs:
    """What rebuilds the network: its ModelConfig fields, classes per head, input mean and std (0..255 units)."""

    cfg: dict
    num_classes: list[int]
    mean: list[float]
    std: list[float]

    def build(self) -> nn.Module:
        return build_model(ModelConfig(**saved_fields(self.cfg)), self.num_classes, tuple(self.mean), tuple(self.std))


@dataclass(frozen=True)
class Checkpoint:
    """A training checkpoint (``last.pt``, ``best.pt``): the one reader and writer of the payload's keys.

    >>> best = Checkpoint.load("runs/demo/best.pt")  # doctest: +SKIP
    >>> best.progress.best_epoch, best.schema.heads  # doctest: +SKIP
    """

    model_args: ModelArgs
    model: dict  # state dict of the un-compiled model
    optimizer: dict
    ema: dict | None  # state dict of the EMA weights (what validation and inference use), None without --ema
    scaler: dict | None  # the fp16 GradScaler's state
    progress: Progress
    config: dict  # the resolved TrainConfig (recipe.config.from_dict rebuilds it)
    schema: Schema
    max_lr: float  # the one-cycle peak the run trains with (resolved when --lr auto)
    precision: str  # what training ran in: "fp32", "bf16" or "fp16"
    precision_check: dict | None  # the bf16 self-check (PrecisionCheck.to_dict())
    split: SplitRef | None  # the split trained on; None in checkpoints that predate it
    size: str  # "HxW" the images were resized to
    resize: str  # "stretch" | "pad"
    val: dict | None = None  # best.pt: the val results that made it the best
    attrfit_version: str = __version__

    def to_payload(self) -> dict:
        """The dict written to disk (:func:`save` adds ``format`` and ``attrfit_version``)."""
        payload = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                   if f.name not in ("size", "resize", "val", "attrfit_version")}
        payload.update(model_args=dataclasses.asdict(self.model_args), progress=self.progress.to_dict(),
                       schema=self.schema.to_dict(), data={"size": self.size, "resize": self.resize},
                       split=dataclasses.asdict(self.split) if self.split is not None else None)
        return payload if self.val is None else {**payload, "val": self.val}

    @classmethod
    def from_payload(cls, d: dict, path: str | Path = "checkpoint") -> Checkpoint:
        try:
            data = d.get("data") or d["config"]["data"]  # {"size": "HxW", "resize": mode}; older runs: the config's
            return cls(ModelArgs(**d["model_args"]), d["model"], d["optimizer"], d.get("ema"), d.get("scaler"),
                       Progress(**d["progress"]), d["config"], Schema.from_dict(d["schema"]), float(d["max_lr"]),
                       d.get("precision", "fp32"), d.get("precision_check"),
                       SplitRef(**d["split"]) if d.get("split") else None, data["size"], data["resize"],
                       d.get("val"), d.get("attrfit_version", "?"))
        except (KeyError, TypeError) as e:
            raise AttrfitError(f"{path}: not a checkpoint of an attrfit training run (no {e})") from None

    def save(self, path: str | Path, keep_previous: bool = False) -> Path:
        return save(self.to_payload(), path, keep_previous)

    @classmethod
    def load(cls, path: str | Path, map_location="cpu") -> Checkpoint:
        """Read, verify (see :func:`load`) and type a checkpoint."""
        return cls.from_payload(load(path, map_location), path)

    @classmethod
    def load_with_fallback(cls, path: str | Path, map_location="cpu") -> tuple[Checkpoint, Path]:
        """:meth:`load`, falling back to the ``.prev`` copy of a damaged or missing file (see :func:`load_with_fallback`)."""
        payload, used = load_with_fallback(path, map_location)
        return cls.from_payload(payload, used), used
