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
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attrfit.core.errors import AttrfitError
from attrfit.core.progress import progress_bar
from attrfit.data.augment import Mix, augment_batch, mix_batch
from attrfit.data.table import Schema
from attrfit.data.split import SplitRef
from attrfit.model import checkpoint
from attrfit.model.checkpoint import Checkpoint, ModelArgs, Progress
from attrfit.model.net import build_model
from attrfit.model.precision import (PrecisionCheck, autocast, check_compiler, compute_dtype, guard_bf16,
                                     inference_batches, resolve_device, resolve_precision)
from attrfit.recipe.config import TrainConfig, to_dict, validate
from attrfit.training.distributed import Dist

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


# ---------------------------------------------------------------- model, optimizer, loss

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


def class_weights(train_labels: Tensor, num_classes: list[int], power: float = 1.0) -> list[Tensor]:
    """Inverse-frequency weights per head to the ``power`` (1: inverse frequency, 0.5: its square
    root), normalised to mean 1 over the classes present."""
    out = []
    for counts in class_counts(train_labels, num_classes):
        k = len(counts)
        w = torch.where(counts > 0, counts.sum() / (k * counts.clamp(min=1)), torch.zeros_like(counts))
        w = w**power
        out.append(w / w[counts > 0].mean())
    return out


def class_counts(train_labels: Tensor, num_classes: list[int]) -> list[Tensor]:
    """Labelled train rows per class, per head (float; missing labels, -1, not counted)."""
    return [torch.bincount(col[col >= 0], minlength=k).float() for col, k in zip(train_labels.T, num_classes)]


def logit_offsets(train_labels: Tensor, num_classes: list[int], tau: float) -> list[Tensor]:
    """tau * log(train frequency) per class and head, for the logit-adjusted loss (a class never seen counts
    as one row, so its offset stays finite).

    Example:
        >>> [round(v, 3) for v in logit_offsets(torch.tensor([[0], [0], [0], [1]]), [2], 1.0)[0].tolist()]
        [-0.288, -1.386]
    """
    out = []
    for counts in class_counts(train_labels, num_classes):
        counts = counts.clamp(min=1)
        out.append(tau * (counts / counts.sum()).log())
    return out


@dataclass
class LossSpec:
    head_weights: list[float]
    class_weights: list[Tensor | None]
    label_smoothing: float = 0.0
    # tau * log(class frequency) per head, added to the logits inside the loss (the logit-adjusted loss), or None
    logit_offsets: list[Tensor] | None = None
    # head_weights as a tensor on the training device, made once: building it each step is a
    # blocking host-to-GPU copy, which waits for all queued GPU work (a sync per step)
    head_weight_tensor: Tensor | None = None


def multi_head_loss(logits: tuple[Tensor, ...], targets: Tensor, spec: LossSpec) -> tuple[Tensor, Tensor]:
    """Weighted sum of per-head cross-entropies; missing labels (-1) are skipped.

    A head with no labelled sample in the batch contributes exactly 0. Returns
    ``(total, per_head)`` with ``per_head`` the unweighted mean loss of each head.
    """
    per_head = []
    for j, out in enumerate(logits):
        t = targets[:, j]
        labelled = (t >= 0).sum()
        out = out.float() if spec.logit_offsets is None else out.float() + spec.logit_offsets[j]
        loss = F.cross_entropy(
            out, t, weight=spec.class_weights[j], ignore_index=-1,
            label_smoothing=spec.label_smoothing, reduction="sum",
        )
        per_head.append(loss / labelled.clamp(min=1))
    per_head_t = torch.stack(per_head)
    weights = spec.head_weight_tensor
    if weights is None or weights.device != per_head_t.device:
        weights = torch.tensor(spec.head_weights, device=per_head_t.device)
    return (per_head_t * weights).sum(), per_head_t


def mixed_loss(logits: tuple[Tensor, ...], targets: Tensor, spec: LossSpec, mix: Mix) -> tuple[Tensor, Tensor]:
    """Mixup/cutmix loss: ``lam * loss(targets) + (1 - lam) * loss(targets[perm])``, total and per head.

    Both terms are :func:`multi_head_loss`, so class weights, label smoothing and head weights
    apply to each, and a missing label (-1) drops its own term only: both are divided by the
    head's labelled count in the batch, which the permutation does not change.
    """
    own_total, own_head = multi_head_loss(logits, targets, spec)
    other_total, other_head = multi_head_loss(logits, targets[mix.perm], spec)
    lam = mix.lam
    return lam * own_total + (1.0 - lam) * other_total, lam * own_head + (1.0 - lam) * other_head


def loss_spec(cfg: TrainConfig, schema: Schema, train_labels: Tensor, device: torch.device) -> LossSpec:
    unknown = set(cfg.optim.loss_weights) - set(schema.heads)
    if unknown:
        raise AttrfitError(f"loss-weights names unknown head(s) {sorted(unknown)}; heads: {', '.join(schema.heads)}")
    weights = [float(cfg.optim.loss_weights.get(h, 1.0)) for h in schema.heads]
    cw = (class_weights(train_labels, schema.num_classes, cfg.optim.class_weight_power) if cfg.optim.class_weights
          else [None] * len(weights))
    cw = [w.to(device) if w is not None else None for w in cw]
    tau = cfg.optim.logit_adjust
    offsets = [o.to(device) for o in logit_offsets(train_labels, schema.num_classes, tau)] if tau > 0 else None
    return LossSpec(weights, cw, cfg.optim.label_smoothing, logit_offsets=offsets,
                    head_weight_tensor=torch.tensor(weights, device=device))


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
class Sides:
    """What the loop may touch: the train images and labels, and val for model selection."""

    train_images: Tensor
    train_labels: Tensor
    val_images: Tensor
    val_labels: Tensor


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
                      loss_spec(cfg, schema, sides.train_labels, device), total, max_lr, dist, scaler, check)
    net = dist.wrap(model) if dist.enabled else model  # DDP first, then compile: torch's recommended order
    if cfg.compile:
        check_compiler(device)
    trainer.compiled = torch.compile(net) if cfg.compile else (net if dist.enabled else None)
    return trainer


# ---------------------------------------------------------------- the data on the training device

# The sides may take at most this share of the GPU memory free before training: the rest is
# for the weights, optimizer state and activations (a few GB at most for attrfit's presets).
DEVICE_DATA_SHARE = 0.5


def keep_on_device(device: torch.device, nbytes: int, free_bytes: int) -> bool:
    """Whether the train and val tensors (``nbytes`` in all) should live on ``device`` for the run.

    Only on a GPU (on the CPU they already are where the steps run), and only where they
    take at most :data:`DEVICE_DATA_SHARE` of its free memory.

    Example:
        >>> keep_on_device(torch.device("cuda"), 330 << 20, 100 << 30), keep_on_device(torch.device("cpu"), 1, 2)
        (True, False)
    """
    return device.type == "cuda" and nbytes <= DEVICE_DATA_SHARE * free_bytes


def _tensors(sides: Sides) -> list[Tensor]:
    return [getattr(sides, f.name) for f in fields(sides)]  # not dataclasses.astuple: it deep-copies


def sides_nbytes(sides: Sides) -> int:
    return sum(v.nelement() * v.element_size() for v in _tensors(sides))


def move_sides(sides: Sides, device: torch.device) -> Sides:
    return Sides(*(v.to(device) for v in _tensors(sides)))


def device_sides(sides: Sides, device: torch.device) -> Sides:
    """The sides on a GPU once for the whole run where they fit; else (and on the CPU) as they are.

    On the GPU each batch is then gathered there (:func:`gather`): no host-to-GPU copy per step.
    Where they do not fit, batches are gathered on the CPU and copied through pinned memory.
    """
    if device.type != "cuda":
        return sides
    nbytes, (free, _) = sides_nbytes(sides), torch.cuda.mem_get_info(device)
    if not keep_on_device(device, nbytes, free):
        log.info("the train and val images (%.0f MiB) stay in CPU memory (%.0f MiB free on %s): batches are "
                 "copied each step", nbytes / 2**20, free / 2**20, device)
        return sides
    log.info("the train and val images (%.0f MiB) moved to %s for the run", nbytes / 2**20, device)
    return move_sides(sides, device)


def gather(images: Tensor, labels: Tensor, idx: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    """Rows ``idx`` of ``images`` and ``labels``, on ``device``.

    Gathered where the tensors live; from CPU memory to a GPU the batch goes through pinned
    memory, so the copy runs asynchronously instead of waiting for the GPU's queue to drain.
    """
    idx = idx.to(images.device, non_blocking=True)
    x, y = images[idx], labels[idx]
    if copies_through_pinned_memory(x.device, device):
        x, y = x.pin_memory(), y.pin_memory()
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def copies_through_pinned_memory(source: torch.device, target: torch.device) -> bool:
    """CPU to GPU only: a batch already on a GPU (``cuda:0`` for ``cuda``) cannot and need not be pinned.

    Example:
        >>> copies_through_pinned_memory(torch.device("cuda", 0), torch.device("cuda"))
        False
    """
    return source.type == "cpu" and target.type == "cuda"


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
    total, per_head = multi_head_loss(logits, y, t.loss) if mix is None else mixed_loss(logits, y, t.loss, mix)
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


# ---------------------------------------------------------------- checkpoints

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
