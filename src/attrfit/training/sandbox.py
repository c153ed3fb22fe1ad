"""Measuring a trainer without changing it: what the LR range test and the ``--budget`` timing share.

:func:`leaves_no_trace` restores, bit for bit, everything training steps change; :func:`train_batches`
gives the batches the training loop would (this rank's shard of each epoch's order).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch

from attrfit.training.distributed import Dist
from attrfit.training.trainer import Trainer, epoch_order, steps_per_epoch
from attrfit.training.sides import Sides


def rng_state() -> tuple:
    return torch.get_rng_state(), (torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)


def set_rng_state(state: tuple) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


@contextmanager
def leaves_no_trace(t: Trainer):
    """Restore, on exit (also on an exception), everything a training step changes.

    That is the weights and buffers (BatchNorm running statistics and batch counts),
    optimizer state and hyper-parameters, the EMA weights, the fp16 grad scaler, the
    train/eval mode and the torch RNG (CPU and CUDA; ``train_step`` reseeds it for
    dropout). Snapshots are deep copies: ``state_dict()`` returns live references.
    """
    model = copy.deepcopy(t.model.state_dict())
    optimizer = copy.deepcopy(t.optimizer.state_dict())
    ema = copy.deepcopy(t.ema.state_dict()) if t.ema is not None else None
    scaler = copy.deepcopy(t.scaler.state_dict()) if t.scaler is not None else None
    training, rng = t.model.training, rng_state()
    try:
        yield
    finally:
        t.model.load_state_dict(model)
        t.optimizer.load_state_dict(optimizer)
        t.optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            t.ema.load_state_dict(ema)
        if scaler is not None:
            t.scaler.load_state_dict(scaler)
        t.model.train(training)
        set_rng_state(rng)


def train_batches(sides: Sides, batch_size: int, order_seed: int, steps: int, dist: Dist):
    """Yield ``steps`` (uint8 images, labels) batches of the train side, reshuffled each pass.

    Pass ``p`` uses ``epoch_order(n, order_seed, p)`` (this rank's shard of it), full
    batches only, as the training loop does.
    """
    n, done, epoch = len(sides.train_images), 0, 0
    while True:
        order = dist.shard(epoch_order(n, order_seed, epoch))
        for k in range(steps_per_epoch(len(order), batch_size)):
            if done == steps:
                return
            idx = order[k * batch_size : (k + 1) * batch_size]
            yield sides.train_images[idx], sides.train_labels[idx]
            done += 1
        epoch += 1
