"""Multi-process training with PyTorch's own engine (torchrun + DistributedDataParallel).

Under ``torchrun`` the environment names each process's rank; :func:`from_env` turns it
into a :class:`Dist`: backend ``nccl`` on CUDA, ``gloo`` on the CPU. Without torchrun,
``Dist()`` is the single-process no-op. Each epoch's permutation (a pure function of
seed and epoch, identical on every rank) is sharded ``perm[rank::world]``, so the ranks
together see each train image once per epoch.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as td
from torch import Tensor, nn

log = logging.getLogger(__name__)


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, order: Tensor) -> Tensor:
        """This rank's share of an epoch's order; every rank gets the same count."""
        if not self.enabled:
            return order
        per_rank = len(order) // self.world_size
        return order[self.rank :: self.world_size][:per_rank]

    def wrap(self, model: nn.Module) -> nn.Module:
        ids = [self.local_rank] if self.device is not None and self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def barrier(self) -> None:
        if self.enabled:
            td.barrier()

    def broadcast_object(self, obj):
        """Rank 0's object on every rank (e.g. the run folder, or an error message)."""
        if not self.enabled:
            return obj
        box = [obj]
        td.broadcast_object_list(box, src=0)
        return box[0]

    def main_first(self, fn):
        """Run ``fn`` on rank 0 first, then on the others; an error on rank 0 stops every rank.

        For work that writes shared files (the split, the image cache): rank 0 makes them,
        the other ranks then read them. Rank 0's error message reaches every rank, so no
        rank waits forever for a peer that has failed.
        """
        if not self.enabled:
            return fn()
        result, error = None, None
        if self.is_main:
            try:
                result = fn()
            except Exception as e:  # re-raised below on every rank
                error = e
        message = self.broadcast_object(None if error is None else f"{type(error).__name__}: {error}")
        if error is not None:
            raise error
        if message is not None:
            from attrfit.core.errors import AttrfitError

            raise AttrfitError(f"rank 0 failed: {message}")
        return result if self.is_main else fn()

    def close(self) -> None:
        if self.enabled and td.is_initialized():
            td.destroy_process_group()


def under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def from_env(device_pref: str = "auto", timeout_s: int = 600) -> Dist:
    """Join the process group torchrun set up (or return the single-process Dist)."""
    if not under_torchrun():
        return Dist()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() and device_pref != "cpu"
    if use_cuda:
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    backend = "nccl" if use_cuda else "gloo"
    td.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    log.debug("rank %d/%d joined (%s, %s)", rank, world, backend, device)
    return Dist(rank, world, local, device)
