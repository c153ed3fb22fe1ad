"""Training-step speed of config variants, timed in alternating rounds in one process.

    python bench/step_speed.py --variant eager= --variant compile="compile=true"
    python bench/step_speed.py --variant 128x64= --variant 160x80="data.size=160x80"
    python bench/step_speed.py --quick --variant a= --variant b="batch_size=64"

Each variant is a set of config overrides (``KEY=VALUE`` separated by spaces) on the defaults,
trained with attrfit's own step (:class:`common.AttrfitSteps`: augmentation, channels_last,
bf16 autocast where fast, the loss, SGD, the finiteness check) on PETA ``peta_heads.csv`` (or
``--csv``). Rounds alternate the variants (A, B, C, A, B, C, ...), so drift of a shared machine
hits all of them; each round starts with untimed warm-up steps (compilation happens in the
first). Reported: images/s per round, the median, and each variant's median ratio to the first.
This is how a lever's cost is measured before it is tried for accuracy (bench/ablation.py).
"""

from __future__ import annotations

import sys
import time

import torch

import common
import throughput
from attrfit.data.cache import parse_size
from attrfit.model.net import count_flops


def parse_args():
    p = common.base_parser(__doc__, "step_speed")
    common.add_data_args(p)
    p.add_argument("--variant", action="append", default=[], metavar='NAME="KEY=VALUE ..."',
                   help="a variant (repeat); the first is the reference")
    p.add_argument("--steps", type=int, default=20, help="timed steps per round (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per round (default 3)")
    p.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    return p.parse_args()


def build(args, overrides: dict) -> common.AttrfitSteps:
    from attrfit.data.load import DataConfig
    from attrfit.recipe.config import TrainConfig, apply
    from attrfit.training.sides import make_sides

    quick_dir = common.RESULTS / "work" / "people"
    csv = common.make_people(quick_dir) if args.quick else (args.csv or common.peta_csv("heads"))
    work = quick_dir if args.quick else common.RESULTS / "work"
    size = overrides.pop("data.size", None) or args.size or ("64x32" if args.quick else common.PETA_SIZE)
    data = throughput.load(csv, args.images, args.group_column, size, work)
    overrides = {"device": args.device, "report": False, **overrides}
    if args.preset:
        overrides.setdefault("model.preset", args.preset)
    cfg = apply(TrainConfig(data=DataConfig(csv=str(csv), size=size)), overrides)
    total = args.rounds * (args.warmup + args.steps) + 1
    return common.AttrfitSteps(cfg, data.schema, make_sides(data), total_steps=total)


def main() -> int:
    args = parse_args()
    if not args.quick and args.csv is None and not common.require_peta():
        return 0
    common.apply_threads(args.threads)
    variants = {}
    for spec in args.variant or ["default="]:
        name, _, kv = spec.partition("=")
        variants[name] = dict(x.split("=", 1) for x in kv.split())
    if args.quick:
        args.steps, args.warmup, args.rounds = min(args.steps, 3), 1, min(args.rounds, 2)
    t0 = time.perf_counter()
    steppers = {name: build(args, dict(ov)) for name, ov in variants.items()}
    build_s = time.perf_counter() - t0
    rates: dict[str, list[float]] = {n: [] for n in variants}
    for _ in range(args.rounds):
        for name, s in steppers.items():
            rates[name].append(s.timed(args.warmup, args.steps))
    ref = common.median(rates[next(iter(rates))])
    first = next(iter(steppers.values()))
    peak = throughput.matmul_peak(torch.bfloat16, 1024 if args.quick else 4096, 2 if args.quick else 5,
                                  first.t.device)
    flops = {n: 3 * count_flops(s.t.model, parse_size(s.t.cfg.data.size)) for n, s in steppers.items()}
    rows = [[n, " ".join(f"{k}={v}" for k, v in variants[n].items()), ", ".join(f"{r:.0f}" for r in rs),
             common.median(rs), common.median(rs) / ref, flops[n] / 1e9, common.median(rs) * flops[n] / 1e9,
             f"{common.median(rs) * flops[n] / peak:.1%}"] for n, rs in rates.items()]
    table = common.markdown_table(["variant", "overrides", "images/s per round", "median", "vs first",
                                   "train GFLOP/img", "GFLOP/s", "of bf16 peak"], rows)
    common.report("step_speed", args.out, [table], {
        "machine": common.machine(first.t.device), "variants": variants, "rates": rates, "build_s": build_s,
        "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds,
        "train_flops_per_image": flops, "peak_bf16_matmul_flops_per_s": peak,
        "precision": {n: s.t.precision for n, s in steppers.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(common.run_main(main))
