"""A trainer's state as a checkpoint, and back: what ``best.pt`` and ``last.pt`` hold, and ``--init-from``."""

from __future__ import annotations

import logging

from attrfit.core.errors import AttrfitError
from attrfit.data.split import SplitRef
from attrfit.model import checkpoint
from attrfit.model.checkpoint import Checkpoint, ModelArgs, Progress
from attrfit.recipe.config import to_dict
from attrfit.training.trainer import Trainer

log = logging.getLogger(__name__)


def model_args(t: Trainer) -> ModelArgs:
    m = t.model
    return ModelArgs(to_dict(m.cfg), list(m.num_classes), m.mean.flatten().tolist(), m.std.flatten().tolist())


def checkpoint_of(t: Trainer, prog: Progress, split: SplitRef, val: dict | None = None) -> Checkpoint:
    """The trainer's state now (``val``: for best.pt, the val results that made it the best)."""
    return Checkpoint(
        model_args=model_args(t),
        model=t.model.state_dict(),
        optimizer=t.optimizer.state_dict(),
        ema=t.ema.state_dict() if t.ema is not None else None,
        scaler=t.scaler.state_dict() if t.scaler is not None else None,
        progress=prog,
        config=to_dict(t.cfg),
        schema=t.schema,
        max_lr=t.max_lr,
        precision=t.precision,
        precision_check=t.check.to_dict() if t.check else None,
        split=split,
        size=t.cfg.data.size,
        resize=t.cfg.data.resize,
        val=val,
    )


def restore(t: Trainer, ckpt: Checkpoint) -> Progress:
    t.model.load_state_dict(ckpt.model)
    t.optimizer.load_state_dict(ckpt.optimizer)
    if t.ema is not None and ckpt.ema is not None:
        t.ema.load_state_dict(ckpt.ema)
    if t.scaler is not None and ckpt.scaler:
        t.scaler.load_state_dict(ckpt.scaler)
    return Progress(**ckpt.progress.to_dict())


def init_weights_from(t: Trainer, source: str) -> None:
    """``--init-from``: copy weights (not optimizer or schedule) from an earlier checkpoint."""
    ckpt, path = Checkpoint.load_with_fallback(checkpoint.resolve(source))
    diff = ckpt.schema.differences(t.schema)
    if diff:
        raise AttrfitError(f"--init-from {path}: its schema differs from this data: {'; '.join(diff)}")
    try:
        t.model.load_state_dict(ckpt.ema if ckpt.ema is not None else ckpt.model)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise AttrfitError(f"--init-from {path}: its architecture does not match this model's ({first}); "
                           "use the same --preset/--width/--depth") from None
    if t.ema is not None:
        t.ema.load_state_dict(t.model.state_dict())
    log.info("initialised weights from %s", path)
