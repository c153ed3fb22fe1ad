"""Minimal reproduction: a bf16 conv kernel that reads memory it never wrote (below attrfit: torch/oneDNN).

    python bench/bf16_unwritten_read.py        # per shape: is bf16 wrong as memory is, and on dirtied memory

For each conv shape (batch 8, channels_last, bf16 autocast, forward and backward) the output and
both gradients are compared with fp32 on the same bf16-rounded inputs, once with memory as it is
(zeros early in a fresh process; whatever earlier shapes left later) and once after NaN-filled
blocks were freed (as a training run's earlier steps leave its memory).
Found on an AMD EPYC with AVX512-BF16 (torch 2.13.0+cpu): the weight gradient of a 3x3 stride-2
conv on an input 1 pixel wide (1x1, 2x1; 1x2 is fine) is NaN or off by up to 1e30 on dirty memory; other
shapes, including 2x2, 4x2 and 8x4, are exact to bf16 rounding. attrfit's bf16 self-check dirties
freed memory before each checked call for this reason (``attrfit.model.precision.dirty_freed_memory``).
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from attrfit.core.memory import keep_freed_memory
from attrfit.model.precision import dirty_freed_memory

SHAPES = [(1, 1), (2, 1), (1, 2), (2, 2), (4, 2), (8, 4)]
CHANNELS = [(32, 64), (128, 256), (256, 256)]


def conv(cin: int, cout: int, h: int, w: int, stride: int, bf16: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, cin, h, w, generator=g).bfloat16().float()
    weight = torch.randn(cout, cin, 3, 3, generator=g).bfloat16().float()
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = weight.contiguous(memory_format=torch.channels_last).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        y = F.conv2d(x, weight, stride=stride, padding=1)
    y.float().sum().backward()
    return [y.detach().float(), x.grad, weight.grad]


def worst_error(cin: int, cout: int, h: int, w: int, stride: int, dirty: bool) -> float:
    """Largest error of output, input grad and weight grad, relative to the fp32 result's largest value."""
    ref = conv(cin, cout, h, w, stride, bf16=False)
    if dirty:
        dirty_freed_memory()
    got = conv(cin, cout, h, w, stride, bf16=True)
    errors = [float((a - b).abs().max() / b.abs().max().clamp(min=1e-6)) for a, b in zip(got, ref)]
    return max(errors) if all(e == e for e in errors) else float("nan")


def main() -> int:
    print(f"torch {torch.__version__}; freed memory: {keep_freed_memory()}")
    found = 0
    for cin, cout in CHANNELS:
        for stride in (2, 1):
            for h, w in SHAPES:
                as_is, dirty = (worst_error(cin, cout, h, w, stride, d) for d in (False, True))
                bad = not (as_is < 0.05 and dirty < 0.05)
                found += bad
                print(f"conv {cin}->{cout} stride {stride} input {h}x{w}: error as is {as_is:.2g}, "
                      f"dirty {dirty:.2g}{'  <- wrong' if bad else ''}")
    print(f"{found} wrong shape(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
