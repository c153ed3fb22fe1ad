"""The loss of a multi-head model: cross-entropy per head, summed, with what makes it fair to rare classes.

Each head's cross-entropy skips its missing labels (-1). Class weights (``--class-weights``,
inverse frequency to a power) or the logit-adjusted loss (``--logit-adjust TAU``, Menon et al.,
ICLR 2021) correct for the train side's class frequencies; under mixup or cutmix each head's
loss is mixed like its images (:func:`mixed_loss`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from attrfit.data.augment import Mix
from attrfit.core.errors import AttrfitError
from attrfit.data.schema import Schema
from attrfit.recipe.config import TrainConfig


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
