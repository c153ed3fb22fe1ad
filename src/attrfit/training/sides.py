"""The sides of the split the training loop may touch (train, and val for model selection), and where
they live: on a GPU for the whole run where they fit, else in CPU memory with each batch copied.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from attrfit.core.errors import AttrfitError

log = logging.getLogger(__name__)


@dataclass
class Sides:
    """What the loop may touch: the train images and labels, and val for model selection."""

    train_images: Tensor
    train_labels: Tensor
    val_images: Tensor
    val_labels: Tensor


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


# ---------------------------------------------------------------- from the loaded data

def make_sides(data) -> Sides:
    from attrfit.data.load import check_trainable

    check_trainable(data)
    tr, va = data.sides["train"], data.sides["val"]
    _check_val_labels(data.labels[va], data.schema.heads)
    if len(data.sides["test"]) == 0:
        log.warning("the test side of the split is empty: the run trains, but its final test scores will be n/a; "
                    "make the split with a larger --test-fraction for a held-out score")
    return Sides(data.images[tr].contiguous(), data.labels[tr], data.images[va], data.labels[va])


def _check_val_labels(val_labels: Tensor, heads: tuple[str, ...]) -> None:
    """The best epoch is picked on val labels: none at all is an error; a head without any only counts less."""
    labelled = (val_labels >= 0).sum(0).tolist()
    if not any(labelled):
        raise AttrfitError("no head has a labelled row on the val side, so no epoch could be picked as the best; "
                           "make a split with a larger --val-fraction or fill in labels")
    empty = [h for h, n in zip(heads, labelled) if not n]
    if empty:
        log.warning("no labelled val rows for %s: left out of the val means that pick the best epoch", ", ".join(empty))
