"""Checkpoints: versioned dicts, written atomically, verified by checksum on load.

File layout: ``MAGIC`` (8 bytes) + sha256 of the payload (32 bytes) + the payload
(``torch.save`` of a plain dict). A write goes to a temp file in the same folder, is
fsynced, then renamed over the target, so a crash leaves either the old file or the new
one, never half of one. The previous ``last.pt`` is kept as ``last.prev.pt`` so that a
damaged latest checkpoint falls back to the one before.

The dict holds: ``format``, ``attrfit_version``, ``model_args`` (to rebuild the model),
``model`` (un-compiled state dict), ``optimizer``, ``ema``, ``epoch`` (completed),
``step`` (global), ``epoch_step`` (steps done inside the current epoch), ``best``,
``config``, ``schema``, ``rng``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path

import torch
from torch import nn

from attrfit.core.version import __version__

from attrfit.core import files
from attrfit.core.errors import AttrfitError
from attrfit.model.net import ModelConfig, build_model

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
    p = Path(ckpt_or_run)
    if p.is_dir():
        p = p / name
    if not p.is_file():
        raise AttrfitError(f"{p}: no such checkpoint (give a .pt file or a run folder)")
    return p


def model_from_checkpoint(ckpt: dict, use_ema: bool = True) -> nn.Module:
    """Rebuild the model from the arguments stored in a checkpoint and load its weights (EMA if present)."""
    a = ckpt["model_args"]
    model = build_model(ModelConfig(**a["cfg"]), a["num_classes"], tuple(a["mean"]), tuple(a["std"]))
    state = ckpt["ema"] if use_ema and ckpt.get("ema") is not None else ckpt["model"]
    model.load_state_dict(state)
    return model.eval()
