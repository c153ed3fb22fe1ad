"""bf16 must be sound and repeatable on every CPU: the self-check, the fp32 fallback per layer, determinism.

The AMX fault (garbage from oneDNN's bf16 3x3 stride-2 conv on 4x2 inputs, different on each
call) cannot be produced on a CPU without AMX, so some tests inject a fault of the same kind:
a bf16 conv on an input of width <= 2 at stride 2 returns huge values that change on every call.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch
import torch.nn.functional as F

import attrfit.training.trainer
from attrfit.model import checkpoint
from attrfit.recipe.config import TrainConfig, apply
from attrfit.core.errors import AttrfitError
from attrfit.model.net import ModelConfig, build_model
from attrfit.model.precision import bf16_error, conv_inputs, guard_bf16, inference_batches, set_fp32_layers
from attrfit.training.loop import fit

from helpers import write_tiny

CPU = torch.device("cpu")
REAL_CONV2D = F.conv2d


def faulty_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """F.conv2d with the AMX fault's shape: wrong, and different each call, in bf16 at width <= 2, stride 2."""
    y = REAL_CONV2D(x, weight, bias, stride, padding, dilation, groups)
    s = stride if isinstance(stride, int) else stride[-1]
    if y.dtype == torch.bfloat16 and x.shape[-1] <= 2 and s == 2:
        y = y + (torch.rand(y.shape) * 1e30).to(y.dtype)  # global RNG on purpose: not repeatable
    return y


@pytest.fixture
def amx_like_fault(monkeypatch):
    monkeypatch.setattr(F, "conv2d", faulty_conv2d)


def unwritten_read_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """F.conv2d with the AMD fault's shape: in bf16 at stride 2 on a 1-pixel-wide input it adds what a
    1 MiB scratch buffer it never wrote holds, times 0: right in a fresh process (zeros), NaN where
    freed memory held NaN or inf."""
    y = REAL_CONV2D(x, weight, bias, stride, padding, dilation, groups)
    s = stride if isinstance(stride, int) else stride[-1]
    if y.dtype == torch.bfloat16 and x.shape[-1] == 1 and s == 2:
        scratch = torch.empty(2**18)  # 1 MiB, never written
        y = y + scratch[:y.numel()].view(y.shape).to(y.dtype) * 0
    return y


@pytest.fixture
def unwritten_read_fault(monkeypatch):
    monkeypatch.setattr(F, "conv2d", unwritten_read_conv2d)


def small_model():
    return build_model(ModelConfig(), [2, 3]).to(memory_format=torch.channels_last)  # cpu-small


def test_conv_inputs_records_each_layers_shape_and_format():
    shapes = conv_inputs(small_model(), (64, 32), CPU)
    # cpu-small at 64x32: the 4x4 patch stem -> 16x8, then each later stage halves: the last starts at 4x2.
    assert shapes["trunk.0"] == ((3, 64, 32), True)
    assert shapes["trunk.3.conv1.0"] == ((32, 16, 8), True)
    assert shapes["trunk.6.conv1.0"] == ((128, 4, 2), True)
    assert shapes["trunk.6.conv2.0"] == ((256, 2, 1), True)
    assert len(shapes) == 12  # the first block keeps width and size: no shortcut conv


def test_sound_bf16_conv_passes_and_garbage_fails(amx_like_fault):
    net = small_model()
    layers = dict(net.named_modules())
    ok = bf16_error(layers["trunk.5.conv1.0"], (8, 64, 8, 4), True, backward=True)
    assert ok < 0.2  # bf16 rounding: a few hundredths of a std
    bad = bf16_error(layers["trunk.6.conv1.0"], (8, 128, 4, 2), True, backward=False)
    assert bad == float("inf") or bad > 1e6


def test_guard_finds_a_kernel_that_reads_memory_it_never_wrote(unwritten_read_fault):
    """Such a kernel passes on a fresh process's zeroed memory and fails later on a training run's freed
    memory (oneDNN's bf16 weight gradient of a 3x3 stride-2 conv on a 1-wide input, on an AMD EPYC):
    the check dirties the free memory with NaN first, so it fails every time."""
    for _ in range(3):
        net = small_model()
        check = guard_bf16(net, "bf16", CPU, (16, 16), 8, [8])  # the last stage starts at 1x1
        assert sorted(check.fp32_layers) == ["trunk.6.conv1.0", "trunk.6.shortcut.0"]


def test_guard_keeps_exactly_the_faulty_layers_in_fp32(amx_like_fault):
    net = small_model()
    check = guard_bf16(net, "bf16", CPU, (64, 32), 16, [64, 5])
    # Only stride-2 convs whose input is 2 wide: the last stage's first conv and its shortcut.
    assert sorted(check.fp32_layers) == ["trunk.6.conv1.0", "trunk.6.shortcut.0"]
    assert check.checked_layers == 12 and check.batch_sizes == [1, 5, 16, 64]
    marked = sorted(n for n, m in net.named_modules() if getattr(m, "force_fp32", False))
    assert marked == check.fp32_layers
    x = torch.randint(0, 255, (8, 3, 64, 32), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    net.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = net(x), net(x)
    assert all(torch.isfinite(t).all() and torch.equal(t, u) for t, u in zip(a, b))


def test_guard_does_nothing_in_fp32_and_state_is_untouched(amx_like_fault):
    net = small_model()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert guard_bf16(net, "fp32", CPU, (64, 32), 16, [64]).fp32_layers == []
    guard_bf16(net, "bf16", CPU, (64, 32), 16, [64])
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN statistics
    set_fp32_layers(net, [])
    assert not any(getattr(m, "force_fp32", False) for m in net.modules())


def test_inference_batches():
    assert inference_batches(1000, 512) == [488, 512]
    assert inference_batches(100, 512) == [100]
    assert inference_batches(1024, 512) == [512]
    assert inference_batches(0, 512) == []


def _train(csv_path, tmp_path, name, precision, size, epochs=2):
    cfg = apply(TrainConfig(), {"data.csv": str(csv_path), "size": size, "epochs": epochs, "batch_size": 16,
                                "lr": 0.05, "report": False, "precision": precision, "threads": 1,
                                "data.cache_dir": str(tmp_path / "cache")})
    run = fit(cfg, run_dir=tmp_path / name, progress=False)
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    for r in rows:  # timings differ run to run; everything else must not
        for k in ("seconds", "wall_s", "images_per_s"):
            r.pop(k)
    results = json.loads((run / "results.json").read_text())
    for k in ("wall_time_s", "images_per_s"):
        results.pop(k)
    return rows, results, checkpoint.load(run / "best.pt")["model"], run


@pytest.mark.parametrize("precision,size", [("fp32", "64x32"), ("bf16", "64x32"), ("bf16", "32x32"),
                                            ("bf16", "48x80"), ("bf16", "16x16")])
def test_same_seed_same_run(tmp_path, precision, size):
    """The default model (cpu-small) at small sizes, where the last stage sees 2- and 1-pixel-wide maps."""
    csv_path = write_tiny(tmp_path / "data", n=72, size=40)
    first = _train(csv_path, tmp_path, "a", precision, size)
    second = _train(csv_path, tmp_path, "b", precision, size)
    assert first[0] == second[0] and first[1] == second[1]
    assert all(torch.equal(first[2][k], second[2][k]) for k in first[2])
    env = json.loads((first[3] / "environment.json").read_text())
    assert env["precision"] == precision
    assert (env["precision_check"]["checked_layers"] == 12) == (precision == "bf16")


def test_training_through_an_injected_bf16_fault_is_finite_and_repeatable(tmp_path, amx_like_fault):
    csv_path = write_tiny(tmp_path / "data", n=72, size=40)
    first = _train(csv_path, tmp_path, "a", "bf16", "64x32")
    second = _train(csv_path, tmp_path, "b", "bf16", "64x32")
    assert first[0] == second[0] and first[1] == second[1]
    env = json.loads((first[3] / "environment.json").read_text())
    assert sorted(env["precision_check"]["fp32_layers"]) == ["trunk.6.conv1.0", "trunk.6.shortcut.0"]


def test_without_the_guard_the_injected_fault_breaks_training(tmp_path, amx_like_fault, monkeypatch):
    """The injected fault is real enough to matter: the guard is what makes the test above pass."""
    monkeypatch.setattr(attrfit.training.trainer, "guard_bf16", lambda *a, **k: guard_bf16(a[0], "fp32", *a[2:]))
    csv_path = write_tiny(tmp_path / "data", n=72, size=40)
    with pytest.raises(AttrfitError, match="non-finite|loss became") as e:
        _train(csv_path, tmp_path, "a", "bf16", "64x32")
    assert "Lower --lr" not in str(e.value) or "precision fp32" in str(e.value)


def test_divergence_at_a_tiny_lr_does_not_blame_the_lr():
    from types import SimpleNamespace

    from attrfit.training.trainer import divergence_advice

    opt = SimpleNamespace(param_groups=[{"lr": 8e-7}])
    tiny = divergence_advice(SimpleNamespace(optimizer=opt, precision="bf16", max_lr=0.4))
    assert "Lower --lr" not in tiny and "--precision fp32" in tiny and "8e-07" in tiny
    opt.param_groups[0]["lr"] = 0.4
    big = divergence_advice(SimpleNamespace(optimizer=opt, precision="fp32", max_lr=0.4))
    assert "Lower --lr" in big and "precision" not in big
