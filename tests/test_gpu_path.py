"""The CUDA path, checked on the CPU: data kept on the device, few host reads per step, the fp16 grad scaler.

No GPU is needed: the decisions are pure functions, the moves are checked on torch's ``meta``
device, host reads are counted with a ``TorchFunctionMode``, and the scaler branch of the
training step runs with ``torch.amp.GradScaler("cpu")`` (and CPU fp16 autocast).
"""

from __future__ import annotations

import math
import sys

import pytest

from conftest import PLAIN_RECIPE
import torch
from torch.overrides import TorchFunctionMode

import attrfit.training.sides as sides_mod
import attrfit.training.trainer as tr
from attrfit.data.load import load_data
from attrfit.recipe.config import TrainConfig, apply
from attrfit.training.distributed import Dist
from attrfit.training.sides import make_sides
from attrfit.data.split import SplitRef
from attrfit.model.checkpoint import Checkpoint
from attrfit.recipe.schedule import lr_at, momentum_at
from attrfit.training.trainer import Progress, StepMeter, build_trainer, epoch_order, steps_per_epoch, host_sync_every, train_step
from attrfit.training.losses import LossSpec, loss_spec, multi_head_loss
from attrfit.training.sides import Sides, device_sides, gather, keep_on_device, move_sides, sides_nbytes
from attrfit.training.checkpoints import checkpoint_of, restore

GIB = 1 << 30


def tiny_trainer(csv, **over):
    base = {"data.csv": str(csv), "size": "16x16", "width": 8, "stages": 2, "epochs": 2, "batch_size": 4,
            "eval_batch_size": 64, "report": False, "seed": 1, "precision": "fp32"}
    cfg = apply(TrainConfig(), {**PLAIN_RECIPE, **base, **over})
    data = load_data(cfg.data, progress=False)
    sides = make_sides(data)
    return build_trainer(cfg, data.schema, sides, max_lr=0.05, dist=Dist()), sides


def params(t) -> list[torch.Tensor]:
    return [p.detach().clone() for p in t.model.parameters()]


# ---------------------------------------------------------------- the data on the device

def test_keep_on_device_only_on_a_gpu_and_only_where_half_the_free_memory_holds_it():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert keep_on_device(cuda, 330 << 20, 139 * GIB)  # PETA's train side at 128x64 on an H200
    assert keep_on_device(cuda, 4 * GIB, 8 * GIB)
    assert not keep_on_device(cuda, 4 * GIB + 1, 8 * GIB)
    assert not keep_on_device(cuda, 1, 0)
    assert not keep_on_device(cpu, 1, 139 * GIB)  # on the CPU the data is where the steps run already


def fake_sides(n: int = 10) -> Sides:
    images = torch.arange(n * 3 * 4 * 2, dtype=torch.uint8).view(n, 3, 4, 2)
    labels = torch.arange(n * 2).view(n, 2)
    return Sides(images, labels, images[:3].clone(), labels[:3].clone())


def test_sides_move_to_the_device_whole_and_stay_put_on_the_cpu():
    sides = fake_sides()
    assert sides_nbytes(sides) == 10 * 24 + 10 * 2 * 8 + 3 * 24 + 3 * 2 * 8
    assert device_sides(sides, torch.device("cpu")) is sides  # no copy: CPU runs unchanged
    moved = move_sides(sides, torch.device("meta"))
    for name in ("train_images", "train_labels", "val_images", "val_labels"):
        before, after = getattr(sides, name), getattr(moved, name)
        assert after.device.type == "meta" and after.shape == before.shape and after.dtype == before.dtype
        assert before.device.type == "cpu"  # the CPU sides are left as they were


def test_gather_indexes_where_the_data_lives_and_returns_the_rows_asked_for():
    sides, idx = fake_sides(), torch.tensor([7, 2, 2, 9])
    x, y = gather(sides.train_images, sides.train_labels, idx, torch.device("cpu"))
    assert torch.equal(x, sides.train_images[idx]) and torch.equal(y, sides.train_labels[idx])
    on_meta = move_sides(sides, torch.device("meta"))  # images on the "device", indices on the CPU
    x, y = gather(on_meta.train_images, on_meta.train_labels, idx, torch.device("meta"))
    assert x.device.type == y.device.type == "meta" and x.shape == (4, 3, 4, 2) and y.shape == (4, 2)


def test_only_a_cpu_batch_bound_for_a_gpu_is_pinned():
    cpu, cuda, cuda0 = torch.device("cpu"), torch.device("cuda"), torch.device("cuda", 0)
    assert sides_mod.copies_through_pinned_memory(cpu, cuda) and sides_mod.copies_through_pinned_memory(cpu, cuda0)
    assert not sides_mod.copies_through_pinned_memory(cuda0, cuda)  # gathered on the GPU (cuda:0 is not == cuda)
    assert not sides_mod.copies_through_pinned_memory(cpu, cpu)


# ---------------------------------------------------------------- host reads

def test_host_reads_are_rare_on_a_gpu_unless_the_bar_shows():
    assert host_sync_every(torch.device("cpu"), show=False) == (1, 0)
    assert host_sync_every(torch.device("cpu"), show=True) == (1, 10)
    assert host_sync_every(torch.device("cuda"), show=False) == (25, 0)
    assert host_sync_every(torch.device("cuda", 1), show=True) == (25, 10)


def test_loss_spec_builds_the_head_weights_on_the_device_once(tiny):
    t, sides = tiny_trainer(tiny, **{"optim.loss_weights": {"color": 2.0}})
    w = t.loss.head_weight_tensor
    assert w is not None and w.device == torch.device("cpu") and w.tolist() == [2.0, 1.0]
    logits = (torch.randn(6, 3), torch.randn(6, 2))
    y = torch.tensor([[0, 1], [1, -1], [2, 0], [0, 0], [1, 1], [2, -1]])
    cached = multi_head_loss(logits, y, t.loss)
    built = multi_head_loss(logits, y, LossSpec(t.loss.head_weights, t.loss.class_weights))  # per call
    assert all(torch.equal(a, b) for a, b in zip(cached, built))
    again = loss_spec(t.cfg, t.schema, sides.train_labels, torch.device("meta"))
    assert again.head_weight_tensor.device.type == "meta"


class HostReads(TorchFunctionMode):
    """Counts the reads of tensor values into Python (each one a GPU sync on CUDA)."""

    READS = {"__float__", "__bool__", "__int__", "__index__", "item", "tolist", "numpy"}

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += getattr(func, "__name__", "") in self.READS
        return func(*args, **(kwargs or {}))


def one_epoch(t, sides: Sides, prog: Progress, show: bool) -> None:
    """The step part of the training loop (loop.train_epochs) for epoch 0: gather, step, count."""
    bs = t.cfg.batch_size
    order = epoch_order(len(sides.train_images), t.cfg.seed, 0)
    n_steps = steps_per_epoch(len(order), bs)
    meter = StepMeter(t, prog, n_steps, 0, show)
    for i in range(n_steps):
        x, y = gather(sides.train_images, sides.train_labels, order[i * bs : (i + 1) * bs], t.device)
        lr = lr_at(prog.step, t.total_steps, t.max_lr, t.cfg.schedule)
        mom = momentum_at(prog.step, t.total_steps, t.cfg.schedule, t.cfg.optim.momentum)
        loss, per_head, correct = train_step(t, x, y, prog.step, lr, mom)
        prog.step += 1
        meter.add(loss, per_head, correct, y, last=i == n_steps - 1)
    meter.close()


def epoch_reads(csv, monkeypatch, device_type: str, show: bool) -> tuple[int, int]:
    """(host reads in one epoch's steps on the CPU under ``device_type``'s policy, steps run)."""
    real = host_sync_every
    monkeypatch.setattr(tr, "host_sync_every", lambda device, show: real(torch.device(device_type), show))
    t, sides = tiny_trainer(csv)
    prog = Progress()
    with HostReads() as reads:
        one_epoch(t, sides, prog, show)
    return reads.count, prog.step


@pytest.mark.parametrize("show", [False, True])
def test_one_epoch_reads_the_device_every_step_on_the_cpu_but_not_under_the_gpu_policy(tiny, monkeypatch, show):
    cpu_reads, steps = epoch_reads(tiny, monkeypatch, "cpu", show)
    gpu_reads, _ = epoch_reads(tiny, monkeypatch, "cuda", show)
    assert steps >= 10
    assert cpu_reads >= steps  # the finiteness check of every step: the CPU behaviour is kept
    # under the GPU policy: the check at the last step and the fold of the epoch's sums (4 reads),
    # plus, with the bar shown, its running loss every 10 steps and at the last
    bar = steps // 10 + (steps % 10 != 0) if show else 0
    assert gpu_reads <= 1 + 4 + bar, (gpu_reads, steps)


# ---------------------------------------------------------------- the fp16 grad scaler

def scaled(csv, init_scale: float = 2.0**12, **over):
    t, sides = tiny_trainer(csv, **over)
    t.scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    return t, sides


def batch(sides: Sides, n: int = 8):
    return sides.train_images[:n], sides.train_labels[:n]


@pytest.mark.parametrize("clip", [0.0, 0.01])
def test_the_scaler_gives_the_unscaled_step_and_clips_true_gradients(tiny, clip):
    """Scaled by 2^12, unscaled before clipping: the same weights as without a scaler (clipping on or off)."""
    plain, sides = tiny_trainer(tiny, **{"optim.grad_clip": clip})
    with_scaler, _ = scaled(tiny, **{"optim.grad_clip": clip})
    x, y = batch(sides)
    for step in range(3):
        train_step(plain, x, y, step, 0.05, 0.9)
        train_step(with_scaler, x, y, step, 0.05, 0.9)
    for a, b in zip(params(plain), params(with_scaler)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert with_scaler.scaler.get_scale() == 2.0**12  # no inf: the scale is kept (it grows after 2000 steps)
    moved = sum(float((a - b).abs().sum()) for a, b in zip(params(plain), params(tiny_trainer(tiny)[0])))
    assert moved > 0  # the steps did change the weights


def test_the_scaler_skips_a_step_with_inf_gradients_and_halves_its_scale(tiny):
    t, sides = scaled(tiny)
    x, y = batch(sides)
    before = params(t)
    first = next(t.model.parameters())
    hook = first.register_hook(lambda g: g * math.inf)
    loss, _, _ = train_step(t, x, y, 0, 0.05, 0.9)
    hook.remove()
    assert math.isfinite(float(loss))  # the loss was fine; one gradient was not
    assert all(torch.equal(a, b) for a, b in zip(before, params(t)))  # the step was skipped
    assert not any(t.optimizer.state.values())  # no momentum buffer made either
    assert t.scaler.get_scale() == 2.0**11
    train_step(t, x, y, 1, 0.05, 0.9)
    assert not all(torch.equal(a, b) for a, b in zip(before, params(t)))  # the next, finite, step is taken


def test_fp16_autocast_trains_through_the_scaler_on_the_cpu(tiny):
    t, sides = scaled(tiny)
    t.precision = "fp16"  # refused on the CPU for real runs; here it drives train_step's fp16 branch
    x, y = batch(sides)
    before = params(t)
    losses = [float(train_step(t, x, y, step, 0.05, 0.9)[0]) for step in range(3)]
    assert all(math.isfinite(v) for v in losses)
    assert not all(torch.equal(a, b) for a, b in zip(before, params(t)))
    assert t.scaler.get_scale() in (2.0**12, 2.0**11, 2.0**10)  # at most a few overflow skips


def test_the_scaler_state_survives_a_checkpoint_and_the_resumed_run_continues_identically(tiny, tmp_path):
    t, sides = scaled(tiny)
    x, y = batch(sides)
    hook = next(t.model.parameters()).register_hook(lambda g: g * math.inf)
    train_step(t, x, y, 0, 0.05, 0.9)  # skipped: scale halved, growth tracker reset
    hook.remove()
    for step in range(1, 3):
        train_step(t, x, y, step, 0.05, 0.9)  # the growth tracker counts these
    state = t.scaler.state_dict()
    assert state["scale"] == 2.0**11 and state["_growth_tracker"] == 2
    checkpoint_of(t, Progress(step=3), SplitRef("split.json", "f", "a")).save(tmp_path / "last.pt")

    resumed, _ = scaled(tiny, init_scale=2.0**16)  # a fresh scaler, as a resumed fp16 run builds
    restore(resumed, Checkpoint.load(tmp_path / "last.pt"))
    assert resumed.scaler.state_dict() == state
    for step in range(3, 5):
        train_step(t, x, y, step, 0.05, 0.9)
        train_step(resumed, x, y, step, 0.05, 0.9)
    assert all(torch.equal(a, b) for a, b in zip(params(t), params(resumed)))
    assert resumed.scaler.state_dict() == t.scaler.state_dict()


# ---------------------------------------------------------------- bench/gpu_check.py's plumbing

def gpu_check():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def test_gpu_check_plans_the_reference_job_first_with_the_asked_settings(tmp_path):
    g = gpu_check()
    steps = g.plan(g.Settings(), tmp_path / "out", tmp_path / "work")
    assert [s.name for s in steps] == ["nvidia-smi", "env", "demo-data", "prepare", "job-cpu-small", "throughput",
                                       "compile", "job-gpu-base"]
    job = " ".join(steps[4].argv)
    for flag in ("train", "--device cuda", "--epochs 50", "--channels-last", "--compile", "--size 64x64"):
        assert flag in job, flag
    assert "--precision" not in job and "--no-compile" not in job  # the default precision, compiled
    assert steps[2].argv[-3:] == ["13500", "64", "64"]
    assert "--device cuda --preset gpu-base" in " ".join(steps[5].argv)
    assert "--variant eager= --variant compile=compile=true" in " ".join(steps[6].argv)
    smoke = g.plan(g.smoke_settings(), tmp_path / "out", tmp_path / "work")
    assert all("cuda" not in s.argv for s in smoke) and "--quick" in smoke[5].argv


def test_gpu_check_ends_a_hung_step_at_its_timeout_and_skips_steps_past_the_budget(tmp_path):
    g = gpu_check()
    (tmp_path / "logs").mkdir()
    hang = g.Step("hang", [sys.executable, "-c", "import subprocess, sys; print('started', flush=True); "
                           "subprocess.run(['sleep', '60'])"], 1.0)
    report = {"steps": [], "results": {}}
    line = g.run_one(0, hang, 60.0, tmp_path, tmp_path, report)
    rec = report["steps"][0]
    assert rec["timed_out"] and rec["elapsed_s"] < 15 and "timed out" in line
    assert "started" in rec["output_tail"]  # the output up to the kill is kept
    g.run_one(1, hang, g.MIN_STEP_S - 1, tmp_path, tmp_path, report)
    assert "skipped" in report["steps"][1]


def test_gpu_check_reads_a_timed_run(tmp_path):
    g = gpu_check()
    run = tmp_path / "run"
    run.mkdir()
    rows = ["epoch,seconds,images_per_s,val_mean_accuracy", "1,30.0,300,0.5", "2,1.0,9000,0.6", "3,2.0,8000,0.7"]
    (run / "metrics.csv").write_text("\n".join(rows) + "\n")
    (run / "results.json").write_text('{"mean": {"accuracy": 0.66, "majority_accuracy": 0.56}, "best_epoch": 3}')
    r = g.job_results(run, tmp_path / "keep")
    assert r["epochs_done"] == 3 and r["first_epoch_s"] == 30.0 and r["train_s"] == 33.0
    assert r["steady_epoch_s"] == 2.0 and r["steady_images_per_s"] == 8000 and r["test_mean_accuracy"] == 0.66
    assert (tmp_path / "keep" / "metrics.csv").is_file()
