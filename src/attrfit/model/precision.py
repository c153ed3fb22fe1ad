"""Which device and precision a run uses, and which layers must stay fp32 on this machine.

bf16 autocast doubles CPU throughput where the CPU has native bf16 (AVX512-BF16, AMX),
but it is only worth having where it is sound. On Intel Xeons with AMX, torch 2.13's
oneDNN bf16 convolutions return garbage for some small shapes (a 3x3 stride-2 conv on a
4x2 or 2x2 input: errors up to 1e37, a different answer on each call; see
``../shared/repro/amx_bf16_conv.py`` and docs/experiments/bf16.md). Such layers sit
late in the trunk where feature maps are tiny, so they cost little in fp32. On AMD EPYCs
(AVX512-BF16) the weight gradient of a bf16 3x3 stride-2 conv on a 1-pixel-wide input reads
memory it never wrote: right on a fresh process's zeroed pages, garbage on a training run's
freed memory (docs/experiments/bf16.md), so the check dirties freed memory before each call.

So bf16 is never trusted blindly: :func:`guard_bf16` runs each convolution of the actual
model at the shapes it will see (input size, batch sizes, memory format) in bf16 and in
fp32, forward and backward, twice, and marks every layer whose bf16 result is wrong or not
repeatable to run in fp32 (:attr:`attrfit.model.net.Conv2d.force_fp32`). What it found is a
:class:`PrecisionCheck`, recorded in the run. Only CPUs are checked: CUDA bf16 is cuDNN's.

Example:
    >>> dev = resolve_device("cpu")
    >>> resolve_precision("fp32", dev)
    'fp32'
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from attrfit.core.errors import AttrfitError
from attrfit.model.net import Conv2d

log = logging.getLogger(__name__)

# A sound bf16 conv is within ~0.05 of the fp32 result at its worst element, in units of
# the fp32 output's std (bf16 keeps 8 mantissa bits; measured 0.020-0.047 over every conv
# of cpu-small at 128x64, batches 128 and 512, forward and backward, on an AMD EPYC with
# AVX512-BF16). The AMX fault is off by 1e3..1e37 stds. 1.0 leaves a wide margin both ways.
TOLERANCE = 1.0
TILE = 4  # distinct random images in a checked batch (see bf16_error)
POISON_BYTES = 2**20  # blocks of NaN freed before each checked bf16 call (see dirty_freed_memory)


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA if available, else CPU; a CUDA name without a GPU is a user error."""
    if not isinstance(name, str):
        raise AttrfitError(f"device must be a name (auto, cpu, cuda or cuda:N), got {type(name).__name__} {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AttrfitError(f"device '{name}' asked for, but no CUDA GPU is available; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise AttrfitError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None


def cpu_has_fast_bf16() -> bool:
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None) or getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(probe and probe())
    except Exception:
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> bf16 on CPUs with native bf16 and on bf16-capable GPUs, fp16 on older GPUs, else fp32."""
    if precision != "auto":
        if precision == "fp16" and device.type == "cpu":
            raise AttrfitError("fp16 training is for CUDA; on the CPU use bf16 or fp32")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype a resolved precision ('bf16', 'fp16' or 'fp32') computes in.

    Example:
        >>> compute_dtype("bf16"), compute_dtype("fp32")
        (torch.bfloat16, torch.float32)
    """
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def autocast(device: torch.device, precision: str):
    """The autocast context for a resolved precision ('bf16', 'fp16' or 'fp32')."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=compute_dtype(precision))


def check_compiler(device: torch.device) -> None:
    """torch.compile on a CPU writes C++ and builds it at the first step: say so now if it cannot."""
    cxx = os.environ.get("CXX") or "g++"
    if device.type == "cpu" and shutil.which(cxx) is None:
        raise AttrfitError(f"--compile on a CPU needs a C++ compiler ({cxx} was not found on PATH): install one "
                           "(e.g. apt install g++) or set CXX, or run without --compile")


# ---------------------------------------------------------------- the bf16 self-check

@dataclass
class PrecisionCheck:
    """What :func:`guard_bf16` found; goes into the run's environment.json and checkpoints."""

    precision: str  # the precision the model runs in after the check
    fp32_layers: list[str] = field(default_factory=list)  # conv layers kept in fp32 (faulty in bf16 here)
    checked_layers: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    worst_sound_error: float = 0.0  # largest error of a layer that passed, in fp32-output stds
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def conv_inputs(model: nn.Module, size: tuple[int, int], device: torch.device) -> dict[str, tuple[tuple, bool]]:
    """``{layer name: (input shape C x H x W, channels_last)}`` of every Conv2d for 1 image of ``size``."""
    seen: dict[str, tuple[tuple, bool]] = {}
    handles = [m.register_forward_pre_hook(_recorder(seen, name)) for name, m in model.named_modules()
               if isinstance(m, nn.Conv2d)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            x = torch.zeros(1, 3, *size, device=device)
            if _is_channels_last(next(model.parameters())):
                x = x.contiguous(memory_format=torch.channels_last)
            model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return seen


def _recorder(seen: dict, name: str):
    def hook(module: nn.Module, args: tuple) -> None:
        x = args[0]
        seen[name] = (tuple(x.shape[1:]), x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
                      and not x.is_contiguous())
    return hook


def _is_channels_last(w: Tensor) -> bool:
    return w.dim() == 4 and w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()


def bf16_error(conv: nn.Conv2d, shape: tuple, channels_last: bool, backward: bool, seed: int = 0) -> float:
    """How far bf16 autocast is from fp32 for this conv at this input shape (N x C x H x W).

    The error is the largest absolute difference in units of the fp32 result's std, over
    the output (and, with ``backward``, the input and weight gradients); two bf16 runs
    that differ at all count as ``inf`` (a sound kernel is deterministic). The batch
    repeats ``TILE`` random images, so the slow fp32 reference is computed for those alone.
    """
    n, k = shape[0], min(shape[0], TILE)
    g = torch.Generator(device="cpu").manual_seed(seed)
    layer = copy.deepcopy(conv).float()
    layer.force_fp32 = False
    device = layer.weight.device
    base = torch.randn((k, *shape[1:]), generator=g).to(device)
    counts = torch.bincount(torch.arange(n) % k, minlength=k).to(device).view(k, 1, 1, 1).float()
    ref = _run(layer, _format(base, channels_last), None)
    grad_base = torch.randn(ref[0].shape, generator=g).to(device) if backward else None
    if backward:  # each image's gradient weighted by its copies: grad_w is then the whole batch's
        ref = _run(layer, _format(base, channels_last), grad_base * counts)
        ref = [ref[0], ref[1] / counts, ref[2]]
    x = _format(_tile(base, n), channels_last)
    grad_out = _tile(grad_base, n) if backward else None
    dirty_freed_memory()
    first = _run(layer, x, grad_out, bf16=True)
    dirty_freed_memory()
    second = _run(layer, x, grad_out, bf16=True)
    if any(not torch.equal(a, b) for a, b in zip(first, second)):
        return float("inf")
    expected = [_tile(ref[0], n), *([_tile(ref[1], n), ref[2]] if backward else [])]
    worst = 0.0
    for r, b in zip(expected, first):
        worst = max(worst, float((b.float() - r).abs().max() / r.std().clamp(min=1e-12)))
    return worst if worst == worst else float("inf")  # NaN counts as broken


def dirty_freed_memory(block_bytes: int = POISON_BYTES, blocks: int = 8) -> None:
    """Leave the allocator's free memory full of NaN, so a kernel that reads memory it never wrote fails now.

    A fresh process's memory is zeros, where such a read can pass unseen; a training run's
    memory, freed by earlier steps, holds anything (on an AMD EPYC, bf16 weight gradients of a 3x3
    stride-2 conv on a 1-pixel-wide input read it: docs/experiments/bf16.md). Two rounds: glibc may
    serve the first from fresh pages and only keep blocks of this size for reuse after it.
    """
    for _ in range(2):
        held = [torch.full((block_bytes // 4,), float("nan")) for _ in range(blocks)]
        del held


def _tile(t: Tensor, n: int) -> Tensor:
    """``n`` images cycling through the ``len(t)`` of ``t`` (image i is ``t[i % len(t)]``)."""
    return t.repeat(-(-n // len(t)), *([1] * (t.dim() - 1)))[:n]


def _format(x: Tensor, channels_last: bool) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _run(layer: nn.Conv2d, x: Tensor, grad_out: Tensor | None, bf16: bool = False) -> list[Tensor]:
    """Output, and with ``grad_out`` the input and weight gradients, in bf16 autocast or fp32."""
    layer.zero_grad(set_to_none=True)
    backward = grad_out is not None
    x = x.detach().requires_grad_(backward)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.set_grad_enabled(backward), ctx:
        y = layer(x)
    if not backward:
        return [y.detach()]
    y.backward(grad_out)
    return [y.detach(), x.grad.detach(), layer.weight.grad.detach()]


def inference_batches(n: int, batch_size: int) -> list[int]:
    """The batch sizes a pass over ``n`` images in batches of ``batch_size`` runs at."""
    return sorted({min(n, batch_size), n % batch_size} - {0})


def guard_bf16(model: nn.Module, precision: str, device: torch.device, size: tuple[int, int],
               train_batch: int | None, eval_batches: list[int]) -> PrecisionCheck:
    """Check every conv of ``model`` in bf16 at the shapes it will run at; mark faulty ones fp32.

    ``train_batch`` is checked forward and backward, each of ``eval_batches`` forward only
    (batch 1 always). Does nothing unless ``precision`` is bf16 on a CPU. The model's
    weights and state are not changed; only :attr:`Conv2d.force_fp32` flags are set.
    """
    if precision != "bf16" or device.type != "cpu":
        return PrecisionCheck(precision)
    t0 = time.perf_counter()
    shapes = conv_inputs(model, size, device)
    layers = dict(model.named_modules())
    batches = sorted({1, *(b for b in eval_batches if b > 0)} | ({train_batch} if train_batch else set()))
    check = PrecisionCheck(precision, checked_layers=len(shapes), batch_sizes=batches)
    for name, (shape, channels_last) in shapes.items():
        errors = [bf16_error(layers[name], (b, *shape), channels_last, backward=b == train_batch) for b in batches]
        worst = max(errors)
        if worst > TOLERANCE:
            check.fp32_layers.append(name)
            log.debug("bf16 conv %s at input %s: error %.3g stds; kept in fp32", name, shape, worst)
        else:
            check.worst_sound_error = max(check.worst_sound_error, worst)
    set_fp32_layers(model, check.fp32_layers)
    check.seconds = time.perf_counter() - t0
    if check.fp32_layers:
        log.info("bf16 self-check: %d of %d conv layers are unsound in bf16 on this CPU and run in fp32 (%s)",
                 len(check.fp32_layers), len(shapes), ", ".join(check.fp32_layers))
    return check


def set_fp32_layers(model: nn.Module, names: list[str]) -> None:
    """Mark the named :class:`attrfit.model.net.Conv2d` layers to run in fp32 (and every other one not)."""
    wanted = set(names)
    for name, m in model.named_modules():
        if isinstance(m, Conv2d):
            m.force_fp32 = name in wanted
