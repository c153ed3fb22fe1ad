"""Every convolution pass of a training step as oneDNN runs it: implementation, milliseconds, GFLOP/s.

    python bench/conv_passes.py                 # PETA heads, 128x64, batch 128, cpu-small, bf16
    python bench/conv_passes.py --quick         # generated images (a smoke run)

A child process runs attrfit's training step (:class:`common.AttrfitSteps`) with oneDNN's verbose
log on for ``--steps`` steps after a warm-up, and this process reads the log: per pass (forward,
backward to the input, backward to the weights) and per layer shape, which oneDNN kernel ran
(``brg_conv_fwd``, ``jit_bf16``, ...), its time (median over the steps) and its rate against the
FLOPs of the convolution (2 x N x C_in x C_out x H_out x W_out x k_h x k_w). This is what tells a
CPU kind's slow kernels apart (the kernels differ between AVX512-BF16 and AMX) where torch.profiler
only says "convolution_backward".
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import defaultdict

import common

SHAPE = re.compile(r"mb(\d+)_ic(\d+)oc(\d+)_ih\d+oh(\d+)kh(\d+)sh(\d+)\D.*?_iw\d+ow(\d+)kw(\d+)")
PASSES = ("forward_training", "backward_data", "backward_weights")


def parse_args():
    p = common.base_parser(__doc__, "conv_passes")
    common.add_data_args(p)
    p.add_argument("--steps", type=int, default=5, help="logged steps (default 5)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


def run_child(args) -> None:
    """Build the stepper, warm up, then step with oneDNN's verbose log on (printed to stdout by oneDNN)."""
    import torch

    import step_speed

    args.rounds, args.warmup = 1, 20  # the schedule spans the warm-up and the logged steps (step_speed.build)
    steps = step_speed.build(args, {})
    for _ in range(args.warmup):  # the first steps' weight gradients are slower (docs/experiments/throughput.md)
        steps.step()
    sys.stdout.flush()
    with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
        for _ in range(args.steps):
            steps.step()


def flops(shape: str) -> int:
    """2 x N x C_in x C_out x H_out x W_out x k_h x k_w of oneDNN's problem descriptor.

    Example:
        >>> flops("mb2_ic3oc4_ih8oh4kh3sh2dh0ph1_iw8ow4kw3sw2dw0pw1")
        6912
    """
    mb, ic, oc, oh, kh, _, ow, kw = map(int, SHAPE.search(shape).groups())
    return 2 * mb * ic * oc * oh * ow * kh * kw


def layer(shape: str) -> str:
    """A readable name for oneDNN's problem descriptor.

    Example:
        >>> layer("mb2_ic3oc4_ih8oh4kh3sh2dh0ph1_iw8ow4kw3sw2dw0pw1")
        '3->4 3x3/2 to 4x4'
    """
    _, ic, oc, oh, kh, sh, ow, kw = map(int, SHAPE.search(shape).groups())
    return f"{ic}->{oc} {kh}x{kw}/{sh} to {oh}x{ow}"


def parse(log: str, steps: int) -> list[list]:
    """Rows (pass, layer, kernel, ms per step, GFLOP/s) from oneDNN's verbose log of ``steps`` steps."""
    times: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for line in log.splitlines():
        f = line.split(",")
        if len(f) < 8 or f[3] != "exec" or f[5] != "convolution":
            continue
        prop = next((x for x in f if x in PASSES), "?")
        times[(prop, f[-2], f[6])].append(float(f[-1]))
    rows = []
    for (prop, shape, kernel), ms in times.items():
        per_step = sum(ms) / steps
        rows.append([prop, layer(shape), kernel, round(per_step, 3),
                     round(flops(shape) * len(ms) / steps / per_step / 1e6, 2)])  # a tiny layer is never 0
    return sorted(rows, key=lambda r: (PASSES.index(r[0]) if r[0] in PASSES else 9, -r[3]))


def totals(rows: list[list]) -> list[list]:
    """Per pass: ms per step and the pass's GFLOP/s over all its layers."""
    out = []
    for prop in PASSES:
        mine = [r for r in rows if r[0] == prop]
        ms = sum(r[3] for r in mine)
        gflop = sum(r[3] * r[4] / 1e3 for r in mine)
        out.append([prop, round(ms, 2), round(gflop / ms * 1e3, 2) if ms else 0])
    return out


def main() -> int:
    args = parse_args()
    if args.child:
        common.apply_threads(args.threads)
        run_child(args)
        return 0
    if not args.quick and args.csv is None and not common.require_peta():
        return 0
    child = [sys.executable, __file__, "--child", *sys.argv[1:]]
    done = subprocess.run(child, capture_output=True, text=True)
    if done.returncode:
        print(done.stderr[-3000:], file=sys.stderr)
        return done.returncode
    log = done.stdout
    rows = parse(log, args.steps)
    if not rows:
        print("no oneDNN convolution in the log (not a oneDNN build, or the step ran elsewhere)")
        return 1
    table = common.markdown_table(["pass", "layer", "oneDNN kernel", "ms per step", "GFLOP/s"], rows)
    sums = common.markdown_table(["pass", "ms per step", "GFLOP/s"], totals(rows))
    import torch

    common.report("conv_passes", args.out, [table, sums], {
        "machine": common.machine(torch.device(args.device)), "rows": rows, "totals": totals(rows),
        "steps": args.steps})
    return 0


if __name__ == "__main__":
    sys.exit(common.run_main(main))
