"""The trainer: model, optimizer and loss for a run, and one optimizer step; what checkpoints carry.

Everything random is a pure function of ``(seed, epoch)`` or ``(seed, step)``: the batch
order of an epoch, the augmentation of a step, dropout. So a run resumed from a
checkpoint at step k continues exactly as if it had never stopped. The loop over epochs
(:mod:`attrfit.training.loop`) and the LR range test (:mod:`attrfit.training.lr_find`)
both drive a :class:`Trainer`.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attrfit.core.errors import AttrfitError
from attrfit.core.progress import progress_bar
from attrfit.data.augment import augment_batch, mix_batch
from attrfit.data.schema import Schema
from attrfit.model.checkpoint import Progress
from attrfit.model.net import build_model
from attrfit.model.precision import (PrecisionCheck, autocast, check_compiler, compute_dtype, guard_bf16,
                                     inference_batches, resolve_device, resolve_precision)
from attrfit.recipe.config import TrainConfig, validate
from attrfit.training import losses
from attrfit.training.distributed import Dist
from attrfit.training.losses import LossSpec
from attrfit.training.sides import Sides

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- pure functions of progress

def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The permutation of the n train rows for one epoch: a pure function of (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def step_seed(seed: int, step: int) -> int:
    return (seed * 2_654_435_761 + step * 40_503 + 12_345) % (2**63)


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Full batches only (drop_last): BatchNorm never sees a tiny last batch."""
    return max(1, n_train // batch_size)


# ---------------------------------------------------------------- model and optimizer

def channel_stats(images: Tensor, max_images: int = 2048, chunk: int = 256) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (0..255 units) of uint8 images N x 3 x H x W, on an even sample.

    Summed in float64 chunks, so the peak extra memory is one chunk, not a float copy of the sample.
    """
    idx = torch.linspace(0, len(images) - 1, min(len(images), max_images)).long()
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    for start in range(0, len(idx), chunk):
        x = images[idx[start : start + chunk]].to(torch.float64)
        total += x.sum((0, 2, 3))
        squares += (x * x).sum((0, 2, 3))
    count = len(idx) * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean * mean).clamp(min=1.0).sqrt()
    return mean.tolist(), std.tolist()


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = model.param_groups(cfg.optim.weight_decay)
    lr = 0.0  # set every step from the schedule
    if cfg.optim.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.optim.momentum, nesterov=cfg.optim.nesterov)


def set_hyper(optimizer: torch.optim.Optimizer, lr: float, momentum: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr
        if "betas" in g:
            g["betas"] = (momentum, g["betas"][1])
        else:
            g["momentum"] = momentum


# ---------------------------------------------------------------- EMA

def ema_decay(decay: float, step: int) -> float:
    """The decay of the EMA update after optimizer step ``step`` (0-based): ``decay``, warmed up as
    min(decay, (1 + step) / (10 + step)), so that early averages follow the trained weights instead of
    the random initial ones (0.999 would keep a third of the initialisation after 1000 steps).

    Example:
        >>> ema_decay(0.999, 0), ema_decay(0.999, 90), ema_decay(0.999, 100000)
        (0.1, 0.91, 0.999)
    """
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """Move the EMA's floating state (weights, BatchNorm statistics) towards the model's; copy the rest."""
    floats, targets = [], []
    for e, p in zip(ema.state_dict().values(), model.state_dict().values()):
        if e.dtype.is_floating_point:
            floats.append(e)
            targets.append(p)
        else:
            e.copy_(p)
    torch._foreach_lerp_(floats, targets, 1.0 - ema_decay(decay, step))  # one call, not one per tensor


# ---------------------------------------------------------------- state that checkpoints carry


@dataclass
class Trainer:
    cfg: TrainConfig
    schema: Schema
    model: nn.Module
    optimizer: torch.optim.Optimizer
    ema: nn.Module | None
    device: torch.device
    precision: str
    loss: LossSpec
    total_steps: int
    max_lr: float
    dist: Dist
    scaler: torch.amp.GradScaler | None = None
    check: PrecisionCheck | None = None  # the bf16 self-check: which layers run in fp32 here
    compiled: nn.Module | None = None
    stop_requested: bool = False  # set by Ctrl-C: finish the step, checkpoint, exit
    deadline: float | None = None  # --budget, a new run: the time.perf_counter() by which training must end

    @property
    def net(self) -> nn.Module:
        # not `compiled or model`: truth-testing a compiled module calls len() on it, which raises
        return self.model if self.compiled is None else self.compiled


def build_trainer(cfg: TrainConfig, schema: Schema, sides: Sides, max_lr: float, dist: Dist) -> Trainer:
    validate(cfg)
    device = dist.device if dist.enabled else resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    torch.manual_seed(cfg.seed)
    mean, std = channel_stats(sides.train_images)
    model = build_model(cfg.model, schema.num_classes, tuple(mean), tuple(std))
    if cfg.sync_bn and dist.enabled:
        if device.type != "cuda":
            raise AttrfitError("--sync-bn needs CUDA GPUs (SyncBatchNorm has no CPU implementation)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    check = guard_bf16(model, precision, device, tuple(sides.train_images.shape[2:]),
                       cfg.batch_size // dist.world_size, inference_batches(len(sides.val_images), cfg.eval_batch_size))
    optimizer = make_optimizer(model, cfg)
    ema = copy.deepcopy(model).eval() if cfg.optim.ema > 0 else None  # after the check: copies its fp32 marks
    n_train = len(sides.train_images) // dist.world_size
    total = cfg.epochs * steps_per_epoch(n_train, cfg.batch_size // dist.world_size)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    trainer = Trainer(cfg, schema, model, optimizer, ema, device, precision,
                      losses.loss_spec(cfg, schema, sides.train_labels, device), total, max_lr, dist, scaler, check)
    net = dist.wrap(model) if dist.enabled else model  # DDP first, then compile: torch's recommended order
    if cfg.compile:
        check_compiler(device)
    trainer.compiled = torch.compile(net) if cfg.compile else (net if dist.enabled else None)
    return trainer


def host_sync_every(device: torch.device, show: bool) -> tuple[int, int]:
    """Every how many steps the training loop reads device values on the host: (finiteness check, progress bar).

    A read waits for the GPU to finish all queued work, so on a GPU the loss is checked every
    25 steps, and the bar's running loss (0: never) only where the bar is shown. On the CPU
    a read costs nothing: the loss is checked every step, as soon as it can go wrong.
    """
    bar = 10 if show else 0
    return (1, bar) if device.type == "cpu" else (25, bar)


# ---------------------------------------------------------------- one step

def train_step(t: Trainer, x: Tensor, y: Tensor, step: int, lr: float, momentum: float) -> tuple[Tensor, Tensor, Tensor]:
    """One optimizer step on a uint8 batch at the given LR and momentum.

    ``step`` seeds the augmentation and dropout of this step. Returns (total loss,
    per-head loss, per-head correct count) as tensors on the training device.
    """
    cfg = t.cfg
    set_hyper(t.optimizer, lr, momentum)
    gen = torch.Generator(device=x.device).manual_seed(step_seed(cfg.seed, step))
    torch.manual_seed(step_seed(cfg.seed + 1, step))  # dropout
    # The model's input made in the augmentation's one float pass, in the dtype its first layer computes in.
    x = augment_batch(x, cfg.augment, gen, t.model.normalisation(), t.model.input_dtype(compute_dtype(t.precision)))
    mix = mix_batch(x, cfg.optim.mixup, cfg.optim.cutmix, gen) if cfg.optim.mixup or cfg.optim.cutmix else None
    if mix is not None:
        x = mix.images
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(t.device, t.precision):
        logits = t.net(x, normalised=True)
    total, per_head = losses.multi_head_loss(logits, y, t.loss) if mix is None else losses.mixed_loss(logits, y, t.loss, mix)
    backward_and_step(t, total)
    if t.ema is not None:
        ema_update(t.ema, t.model, cfg.optim.ema, step)
    with torch.no_grad():
        y = y if mix is None else mix.dominant(y)  # under mixup: the labels of the larger share
        correct = torch.stack([(o.argmax(1) == y[:, j]).sum() for j, o in enumerate(logits)])
    return total.detach(), per_head.detach(), correct


def backward_and_step(t: Trainer, total: Tensor) -> None:
    """Backpropagate ``total`` and take one optimizer step, through the fp16 grad scaler where there is one.

    The scaler multiplies the loss before the backward pass (small fp16 gradients would
    flush to zero), divides the gradients back before clipping (the clip norm is in true
    units), and skips the step, halving its scale, when a gradient is inf or NaN.
    """
    t.optimizer.zero_grad(set_to_none=True)
    if t.scaler is not None:
        t.scaler.scale(total).backward()
        t.scaler.unscale_(t.optimizer)
    else:
        total.backward()
    if t.cfg.optim.grad_clip > 0:
        nn.utils.clip_grad_norm_(t.model.parameters(), t.cfg.optim.grad_clip)
    if t.scaler is not None:
        t.scaler.step(t.optimizer)
        t.scaler.update()
    else:
        t.optimizer.step()


class Diverged(AttrfitError):
    """The loss or the weights became non-finite: the same steps from the same checkpoint repeat it."""


def check_finite(t: Trainer, loss_sum: Tensor, per_head_sum: Tensor, step: int) -> None:
    if bool(torch.isfinite(loss_sum)):
        return
    bad = [h for h, v in zip(t.schema.heads, per_head_sum.tolist()) if not math.isfinite(v)]
    raise Diverged(f"the loss became {float(loss_sum)} by step {step} (head(s) {', '.join(bad) or '?'}"
                   f"{divergence_advice(t)}")


def check_weights(t: Trainer, step: int) -> None:
    """Refuse to checkpoint weights an update made non-finite (the loss shows it only a step later)."""
    state = {n: v for n, v in t.model.state_dict().items() if v.is_floating_point()}  # BN statistics too
    finite = torch.stack([torch.isfinite(v).all() for v in state.values()])
    if bool(finite.all()):
        return
    first = [n for n, ok in zip(state, finite.tolist()) if not ok][0]
    raise Diverged(f"the weights became non-finite by step {step} (first: {first}{divergence_advice(t)}")


def divergence_advice(t: Trainer) -> str:
    """The end of a divergence message: the LR, and what to try, which is not always a lower LR.

    An LR below 1% of the run's peak (or below 1e-4) cannot blow up a network that trained
    at the peak: then the cause is numerical (a faulty low-precision kernel) or the data.
    """
    lr = t.optimizer.param_groups[0]["lr"]
    low_precision = t.precision != "fp32"
    tiny = lr < max(1e-4, 0.01 * t.max_lr)
    text = f"; lr {lr:.3g}). "
    if tiny:
        text += "An LR this small does not cause divergence: "
        return text + ("this looks like a numerical fault of " + t.precision + " on this machine; rerun with "
                       "--precision fp32 and please report it" if low_precision else
                       "check the images and labels of this run (e.g. constant or corrupt images)")
    advice = "Lower --lr (try 'attrfit lr-find') or set --grad-clip"
    return text + advice + ("; if that does not help, try --precision fp32" if low_precision else "")


class StepMeter:
    """Bookkeeping of an epoch's steps: sums kept on the device, the NaN check, the progress bar.

    The sums stay on the training device (no sync per step, except the NaN check on the
    CPU) until :meth:`fold` adds them into ``prog.sums``, the per-epoch sums checkpoints carry.
    """

    def __init__(self, t: Trainer, prog: Progress, n_steps: int, epoch: int, show: bool) -> None:
        heads = len(t.schema.heads)
        if not prog.sums:
            prog.sums = {"loss": 0.0, "per_head": [0.0] * heads, "correct": [0] * heads, "labelled": [0] * heads,
                         "steps": 0, "images": 0}
        self.t, self.prog = t, prog
        self.images_per_step = t.cfg.batch_size // t.dist.world_size * t.dist.world_size
        self.check_every, self.postfix_every = host_sync_every(t.device, show)  # each read of a value syncs
        self.bar = progress_bar(total=n_steps, initial=prog.epoch_step, desc=f"epoch {epoch + 1}/{t.cfg.epochs}",
                                enabled=show)
        self.loss = torch.zeros((), dtype=torch.float64, device=t.device)  # float64: exact whatever the fold points
        self.per_head = torch.zeros(heads, dtype=torch.float64, device=t.device)
        self.correct = torch.zeros(heads, dtype=torch.long, device=t.device)
        self.labelled = torch.zeros(heads, dtype=torch.long, device=t.device)
        self.started, self.steps = time.perf_counter(), 0

    def add(self, loss: Tensor, per_head: Tensor, correct: Tensor, y: Tensor, last: bool) -> None:
        """Count one step (what :func:`train_step` returned and its labels ``y``); ``last``: the epoch's last."""
        self.loss += loss
        self.per_head += per_head
        self.correct += correct
        self.labelled += (y >= 0).sum(0)
        self.steps += 1
        if self.steps % self.check_every == 0 or last:
            check_finite(self.t, self.loss, self.per_head, self.prog.step)
        if self.postfix_every and (self.steps % self.postfix_every == 0 or last):
            rate = self.steps * self.images_per_step / (time.perf_counter() - self.started)
            self.bar.set_postfix(loss=f"{float(self.loss) / self.steps:.3f}", img_s=f"{rate:.0f}", refresh=False)
        self.bar.update(1)

    def fold(self) -> None:
        """Add the device sums into ``prog.sums`` (before a checkpoint) and start them over."""
        s = self.prog.sums
        s["loss"] += float(self.loss)
        s["per_head"] = [a + b for a, b in zip(s["per_head"], self.per_head.tolist())]
        s["correct"] = [a + b for a, b in zip(s["correct"], self.correct.tolist())]
        s["labelled"] = [a + b for a, b in zip(s["labelled"], self.labelled.tolist())]
        s["steps"] += self.steps
        s["images"] += self.steps * self.images_per_step
        for acc in (self.loss, self.per_head, self.correct, self.labelled):
            acc.zero_()
        self.started, self.steps = time.perf_counter(), 0

    def close(self) -> None:
        self.bar.close()
        self.fold()


