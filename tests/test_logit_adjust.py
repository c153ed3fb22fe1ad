"""The logit-adjusted loss (``--logit-adjust TAU``): each head's cross-entropy on its logits plus
TAU * log(the class's train frequency); the model and its predictions keep the plain logits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attrfit.core import runs
from attrfit.data.augment import Mix
from attrfit.model import checkpoint
from attrfit.recipe.config import TrainConfig, apply, from_dict
from attrfit.training import losses
from attrfit.training.loop import fit
from attrfit.training.losses import LossSpec, logit_offsets, mixed_loss, multi_head_loss
from conftest import PLAIN_RECIPE, assert_one_error, cli, write_tiny


def test_offsets_are_tau_times_the_log_train_frequency_without_missing_labels():
    labels = torch.tensor([[0, 1], [0, -1], [0, 0], [1, -1]])
    off = logit_offsets(labels, [3, 2], 0.5)
    # head 0: class 2 is never seen and counts as one row (a finite offset): frequencies 3/5, 1/5, 1/5
    assert torch.allclose(off[0], 0.5 * torch.tensor([0.6, 0.2, 0.2]).log())
    # head 1: the two missing labels are not a class: one row each of 0 and 1
    assert torch.allclose(off[1], 0.5 * torch.tensor([0.5, 0.5]).log())


def _ce(logit, target):
    keep = target >= 0
    return F.cross_entropy(logit[keep], target[keep], reduction="sum") / keep.sum()


def test_the_loss_is_the_cross_entropy_of_the_offset_logits_and_mixup_keeps_it():
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(6, 3, generator=g), torch.randn(6, 2, generator=g))
    targets = torch.tensor([[0, 1], [1, -1], [2, 0], [0, -1], [1, 1], [-1, 0]])
    off = [torch.tensor([0.1, -0.5, -2.0]), torch.tensor([-0.3, -1.2])]
    spec = LossSpec([1.0, 2.0], [None, None], 0.0, off)
    total, per_head = multi_head_loss(logits, targets, spec)
    want = torch.stack([_ce(logits[j] + off[j], targets[:, j]) for j in range(2)])
    assert torch.allclose(per_head, want) and torch.allclose(total, want[0] + 2 * want[1])
    assert not torch.allclose(per_head, multi_head_loss(logits, targets, LossSpec([1.0, 2.0], [None, None]))[1])
    perm = torch.tensor([1, 2, 3, 4, 5, 0])
    _, mixed = mixed_loss(logits, targets, spec, Mix(torch.zeros(0), perm, 0.25))
    other = torch.stack([_ce(logits[j] + off[j], targets[perm, j]) for j in range(2)])
    assert torch.allclose(mixed, 0.25 * want + 0.75 * other)


@pytest.mark.parametrize("tau", [0.0, 1.0])
def test_with_nothing_to_learn_from_the_adjusted_loss_answers_every_class_alike(tau):
    """Fit one bias per class to labels 70/20/10 %: plain cross-entropy learns log(frequency), always the
    majority class; with TAU = 1 the best logits are equal (the balanced-error answer, Menon et al. 2021),
    and with a sign error they would favour the majority twice as much."""
    labels = torch.tensor([0] * 70 + [1] * 20 + [2] * 10)[:, None]
    spec = LossSpec([1.0], [None], 0.0, logit_offsets(labels, [3], tau) if tau else None)
    bias = torch.zeros(3, requires_grad=True)
    opt = torch.optim.SGD([bias], lr=2.0)
    for _ in range(1000):
        opt.zero_grad()
        multi_head_loss((bias.expand(100, 3),), labels, spec)[0].backward()
        opt.step()
    learnt = (bias - bias.mean()).detach()
    log_freq = torch.tensor([0.7, 0.2, 0.1]).log()
    want = (1 - tau) * (log_freq - log_freq.mean())
    assert torch.allclose(learnt, want, atol=1e-3), learnt
    assert math.isclose(float(learnt.max() - learnt.min()), 0.0 if tau else math.log(7), abs_tol=1e-3)


def test_class_weights_and_logit_adjustment_together_are_refused_in_one_line(tmp_path, capsys):
    csv = write_tiny(tmp_path)
    code, _, err = cli(capsys, "train", csv, "--class-weights", "--logit-adjust", "1", "--epochs", "1",
                       "--run-dir", tmp_path / "run")
    assert_one_error(code, err, "--class-weights", "--logit-adjust", "twice")
    assert not (tmp_path / "run").exists()


def test_a_run_trains_on_the_offset_logits_and_keeps_plain_ones_in_its_weights(tmp_path, monkeypatch):
    """The offsets of the train side reach the loss; the model itself has none (prediction uses its plain logits)."""
    csv = write_tiny(tmp_path)
    seen = []
    real = losses.multi_head_loss

    def spy(logits, targets, spec):
        seen.append(spec.logit_offsets)
        return real(logits, targets, spec)

    monkeypatch.setattr(losses, "multi_head_loss", spy)
    cfg = apply(TrainConfig(), {**PLAIN_RECIPE, "data.csv": str(csv), "size": "16x16", "width": 8, "stages": 2,
                                "epochs": 1, "batch_size": 16, "report": False, "precision": "fp32",
                                "logit_adjust": 0.5})
    run = fit(cfg, run_dir=tmp_path / "run", progress=False)
    assert from_dict(runs.read_json(run / "config.json")).optim.logit_adjust == 0.5
    offsets = seen[0]
    assert offsets is not None and len(offsets) == 2
    for off in offsets:  # 0.5 * log of frequencies: all negative, and exp(2 * off) sums to one
        assert (off < 0).all() and torch.isclose((2 * off).exp().sum(), torch.tensor(1.0))
    names = checkpoint.load(run / "best.pt")["model"].keys()
    assert not any("offset" in n or "prior" in n for n in names)
