"""``attrfit train`` with one or more training levers that are not options of the tool, for ablations.

    python bench/patched_train.py whiten_stem -- train labels.csv --epochs 15 ...
    python bench/patched_train.py alt_flip,bn_lr_8 -- train labels.csv --no-flip ...

A lever measured here becomes an option of ``attrfit train`` only when it wins (bench/ablation.py runs
these through ``--lever NAME="--patch LEVER ..."``). Each patch wraps one function of the tool and
leaves the rest as a user gets it:

    whiten_stem  the first layer (the patch stem) starts as the whitening of the train images' patches:
                 the top eigenvectors of their covariance, each scaled by 1 / sqrt(its eigenvalue), with
                 both signs (so the ReLU after it keeps either sign), as in the fast CIFAR-10 trainers;
                 then trained as usual
    alt_flip     each train image mirrored in every other epoch, from a random first epoch per image,
                 instead of at random in each epoch (use with --no-flip)
    bn_lr_N      BatchNorm parameters and biases train at N times the schedule's learning rate
    lookahead    Lookahead (Zhang et al. 2019, k=5, alpha=0.5): every 5 optimizer steps of the run, the
                 slow weights move half-way to the trained ones and training goes on from there
                 (the LR range test and the budget's timing steps are left as they are)
"""

from __future__ import annotations

import sys

import torch

WHITEN_IMAGES = 5000  # train images the covariance of the stem's patches is taken over
WHITEN_EPS = 1e-2  # added to each eigenvalue (normalised pixels: the smallest are near 0)


def patch_whiten_stem() -> None:
    from attrfit.training import loop

    begin = loop._begin

    def whitened_begin(run, t, data, sides, metrics, started):
        prog = begin(run, t, data, sides, metrics, started)
        whiten(t.model, sides.train_images[:WHITEN_IMAGES])
        if t.ema is not None:
            t.ema.load_state_dict(t.model.state_dict())
        return prog

    loop._begin = whitened_begin


def whiten(model, images: torch.Tensor) -> None:
    """Set the model's first convolution (k x k, stride k) to whiten ``images``' k x k patches."""
    stem = model.trunk[0]
    k, width = stem.kernel_size[0], stem.out_channels
    x = (images.float() - model.mean.to(images.device)) / model.std.to(images.device)
    patches = torch.nn.functional.unfold(x, k, stride=k).transpose(1, 2).reshape(-1, 3 * k * k).double()
    patches = patches - patches.mean(0)
    values, vectors = torch.linalg.eigh(patches.T @ patches / len(patches))
    top = vectors[:, -(width // 2):].T / (values[-(width // 2):, None] + WHITEN_EPS).sqrt()  # largest last
    weight = torch.cat([top, -top])
    if len(weight) < width:  # an odd width: one more, the next eigenvector
        weight = torch.cat([weight, vectors[:, -(width // 2) - 1][None] / (values[-(width // 2) - 1] + WHITEN_EPS).sqrt()])
    with torch.no_grad():
        stem.weight.copy_(weight.reshape(width, 3, k, k).to(stem.weight.dtype))


def patch_alt_flip() -> None:
    from attrfit.training import loop

    order, gather = loop.epoch_order, loop.gather
    state = {"epoch": 0, "first": None}

    def recording_order(n, seed, epoch):
        state["epoch"] = epoch
        if state["first"] is None:
            state["first"] = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(seed + 7))
        return order(n, seed, epoch)

    def alternating_gather(images, labels, idx, device):
        x, y = gather(images, labels, idx, device)
        mirror = ((state["first"][idx.cpu()] + state["epoch"]) % 2 == 1).to(x.device)
        return torch.where(mirror[:, None, None, None], x.flip(3), x), y

    loop.epoch_order, loop.gather = recording_order, alternating_gather


def patch_bn_lr(factor: float) -> None:
    from attrfit.training import trainer

    set_hyper = trainer.set_hyper

    def scaled(optimizer, lr, momentum):
        set_hyper(optimizer, lr, momentum)
        optimizer.param_groups[1]["lr"] = lr * factor  # the group without weight decay: BN and biases

    trainer.set_hyper = scaled


LOOKAHEAD_K = 5  # optimizer steps between syncs (the paper's default)
LOOKAHEAD_ALPHA = 0.5  # how far the slow weights move toward the fast ones at a sync


def patch_lookahead() -> None:
    from attrfit.training import trainer

    train_step = trainer.train_step
    pairs: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}  # per model: its parameters, their slow copy

    def lookahead_step(t, x, y, step, lr, momentum):
        if id(t.model) not in pairs:  # the weights before the run's first step
            params = [q for q in t.model.parameters() if q.requires_grad]
            pairs[id(t.model)] = params, [q.detach().clone() for q in params]
        out = train_step(t, x, y, step, lr, momentum)
        if (step + 1) % LOOKAHEAD_K == 0:
            fast, slow = pairs[id(t.model)]
            lookahead_sync(slow, fast)
        return out

    trainer.train_step = lookahead_step  # the loop looks it up per call; the LR range test imported its own


def lookahead_sync(slow: list[torch.Tensor], fast: list[torch.Tensor]) -> None:
    """Move ``slow`` by :data:`LOOKAHEAD_ALPHA` toward ``fast``, then set ``fast`` to it.

    Example:
        >>> s, f = [torch.zeros(2)], [torch.ones(2)]
        >>> lookahead_sync(s, f); s[0].tolist(), f[0].tolist()
        ([0.5, 0.5], [0.5, 0.5])
    """
    with torch.no_grad():
        for s, f in zip(slow, fast):
            s.add_(f.detach().to(s.dtype) - s, alpha=LOOKAHEAD_ALPHA)
            f.copy_(s)


def apply(names: str) -> None:
    for name in names.split(","):
        if name == "whiten_stem":
            patch_whiten_stem()
        elif name == "alt_flip":
            patch_alt_flip()
        elif name == "lookahead":
            patch_lookahead()
        elif name.startswith("bn_lr_"):
            patch_bn_lr(float(name.removeprefix("bn_lr_")))
        else:
            raise SystemExit(f"unknown lever {name!r}: whiten_stem, alt_flip, bn_lr_N, lookahead")


def main() -> int:
    if len(sys.argv) < 3 or sys.argv[2] != "--":
        raise SystemExit(__doc__)
    apply(sys.argv[1])
    from attrfit.cli.app import main as attrfit_main

    return attrfit_main(sys.argv[3:])


if __name__ == "__main__":
    sys.exit(main())
