"""bench/patched_train.py: the levers that are not options of the tool do what they say, and a patched
run trains through the CLI as a user's would."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import torch

from attrfit.model.net import ModelConfig, build_model
from tests.helpers import write_tiny

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_patched_train", ROOT / "bench" / "patched_train.py")
patched = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(patched)


def test_the_whitened_stem_decorrelates_the_patches_it_sees():
    """Correlated pixels (smooth images): after whitening, the stem's first half of channels have unit
    variance and no correlation on those images, and the second half are their negatives."""
    g = torch.Generator().manual_seed(0)
    small = torch.rand(400, 3, 8, 4, generator=g) * 255
    images = torch.nn.functional.interpolate(small, size=(32, 16), mode="bilinear").round().to(torch.uint8)
    model = build_model(ModelConfig(width=8, stages=1), [2])
    patched.whiten(model, images)
    stem = model.trunk[0]
    x = (images.float() - model.mean) / model.std
    out = stem(x).detach().double()
    half = out[:, :4].permute(1, 0, 2, 3).reshape(4, -1)
    cov = torch.cov(half)
    assert torch.allclose(torch.diagonal(cov), torch.ones(4, dtype=torch.float64), atol=0.05)
    assert (cov - torch.diag(torch.diagonal(cov))).abs().max() < 0.05
    assert torch.equal(stem.weight[4:], -stem.weight[:4])


def test_alternating_flips_mirror_each_image_in_every_other_epoch(monkeypatch):
    from attrfit.training import loop

    monkeypatch.setattr(loop, "epoch_order", loop.epoch_order)
    monkeypatch.setattr(loop, "gather", loop.gather)
    patched.patch_alt_flip()
    images = torch.arange(6 * 3 * 2 * 2, dtype=torch.uint8).reshape(6, 3, 2, 2)
    labels = torch.zeros(6, 1, dtype=torch.long)
    idx = torch.arange(6)
    mirrored = []
    for epoch in range(3):
        loop.epoch_order(6, 0, epoch)
        x, _ = loop.gather(images, labels, idx, torch.device("cpu"))
        mirrored.append([bool(torch.equal(x[i], images[i].flip(2))) for i in range(6)])
        assert all(torch.equal(x[i], images[i]) or m for i, m in enumerate(mirrored[-1]))
    assert all(a != b for a, b in zip(mirrored[0], mirrored[1])) and mirrored[0] == mirrored[2]


def test_lookahead_moves_the_weights_half_way_from_where_they_were_every_fifth_step(monkeypatch):
    """Steps that each add 1 to every weight: after 5 of them the weights are half-way, 2.5 from the start,
    and the next sync (after 10) takes them to half-way between 2.5 and 7.5."""
    from types import SimpleNamespace

    from attrfit.training import trainer

    def add_one(t, x, y, step, lr, momentum):
        with torch.no_grad():
            for q in t.model.parameters():
                q.add_(1.0)
        return step

    monkeypatch.setattr(trainer, "train_step", add_one)
    patched.patch_lookahead()
    t = SimpleNamespace(model=torch.nn.Linear(2, 1))
    start = [q.detach().clone() for q in t.model.parameters()]
    seen = []
    for step in range(10):
        assert trainer.train_step(t, None, None, step, 0.1, 0.9) == step
        seen.append(float((t.model.weight.detach() - start[0]).mean()))
    assert seen[3] == 4.0 and seen[4] == 2.5 and seen[5] == 3.5 and seen[9] == 5.0
    assert torch.allclose(t.model.bias, start[1] + 5.0)


def test_a_patched_run_trains_through_the_cli(tmp_path):
    csv_path = write_tiny(tmp_path / "data", n=60, size=16)
    cmd = [sys.executable, str(ROOT / "bench" / "patched_train.py"), "whiten_stem,alt_flip,bn_lr_4,lookahead", "--", "train",
           str(csv_path), "--size", "16x16", "--width", "8", "--stages", "2", "--epochs", "1", "--no-flip",
           "--no-report", "--quiet", "--threads", "1", "--run-dir", str(tmp_path / "r")]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r" / "best.pt").is_file() and (tmp_path / "r" / "results.json").is_file()
