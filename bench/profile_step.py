"""Where a training step's time goes: torch.profiler, by kind of operation.

    python bench/profile_step.py                       # PETA heads, 128x64, batch 128, cpu-small
    python bench/profile_step.py --set compile=true    # the same with torch.compile
    python bench/profile_step.py --by-shape            # top ops per input shape: which layer costs what
    python bench/profile_step.py --quick               # generated images (a smoke run)

Runs attrfit's training step (:class:`common.AttrfitSteps`, as ``attrfit train`` does: batched
augmentation, channels_last, bf16 autocast where the CPU is fast at it, the loss, SGD, the
finiteness check) for some warm-up steps, then profiles ``--steps`` steps and sums the
self CPU time of every op into kinds: convolution (forward and backward), BatchNorm, ReLU,
augmentation, memory-format and dtype conversions, the loss, the optimizer, the finite check,
and the rest. The table's shares add up to the profiled time; the top ops are listed too.
"""

from __future__ import annotations

import re
import sys
import time

from torch.profiler import ProfilerActivity, profile, record_function

import common

# kind -> patterns of op names (first match wins; order matters); the augmentation and the finite
# check are counted by their annotated regions instead (see breakdown)
KINDS = [
    ("optimizer", r"^Optimizer\.|_foreach_|^aten::_fused_sgd|^aten::_fused_adamw"),
    ("convolution", r"convolution|conv2d|mkldnn_conv|_convolution|addmm|^aten::mm$|^aten::linear"),
    ("batchnorm", r"batch_norm"),
    ("relu", r"relu|threshold_backward|clamp_min"),
    ("loss", r"cross_entropy|log_softmax|nll_loss|_softmax"),
    ("conversions", r"^aten::to$|^aten::_to_copy|^aten::copy_|contiguous|^aten::clone"),
    ("pooling", r"pool"),
    ("elementwise", r"^aten::(add|mul|sub|div|fill_|zero_|sum|mean|clamp|where|cat|stack)"),
]


def parse_args():
    p = common.base_parser(__doc__, "profile_step")
    common.add_data_args(p)
    p.add_argument("--steps", type=int, default=10, help="profiled steps (default 10)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5; more with compile)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override")
    p.add_argument("--top", type=int, default=15, help="ops listed by self time (default 15)")
    p.add_argument("--by-shape", action="store_true",
                   help="list the top ops per input shape (tells the layers apart; records shapes, a little slower)")
    return p.parse_args()


def kind_of(name: str) -> str:
    for kind, pattern in KINDS:
        if re.search(pattern, name):
            return kind
    return "other"


def breakdown(prof, steps: int) -> tuple[list[list], float]:
    """Rows (kind, ms per step, share) of self CPU time, and the total ms per step.

    Ops inside the annotated regions ("augment", "finite_check") count for the region, whatever
    their names; every other op by :func:`kind_of` of its name.
    """
    regions = {"augment": "augmentation", "finite_check": "finite check"}
    per_kind: dict[str, float] = {}
    for e in prof.events():
        if e.name.startswith("ProfilerStep"):
            continue
        node = e
        while node is not None and node.name not in regions:
            node = node.cpu_parent
        kind = regions[node.name] if node is not None else kind_of(e.name)
        per_kind[kind] = per_kind.get(kind, 0.0) + e.self_cpu_time_total
    total = sum(per_kind.values())
    rows = [[k, v / steps / 1000, v / total] for k, v in sorted(per_kind.items(), key=lambda kv: -kv[1])]
    return rows, total / steps / 1000


def shapes(input_shapes: list) -> str:
    """The tensor arguments' shapes of an op, e.g. ``128x32x64x32 32x32x3x3``."""
    return " ".join("x".join(map(str, sh)) for sh in input_shapes if sh)


def load(args):
    """The config (defaults + ``--set``), the schema and the sides, as bench/throughput.py loads them."""
    import throughput
    from attrfit.recipe.config import TrainConfig, apply
    from attrfit.data.load import DataConfig
    from attrfit.training.sides import make_sides

    if args.quick:
        csv, work = common.make_people(common.RESULTS / "work" / "people"), common.RESULTS / "work" / "people"
    else:
        csv, work = args.csv or common.peta_csv("heads"), common.RESULTS / "work"
    size = args.size or ("64x32" if args.quick else common.PETA_SIZE)
    data = throughput.load(csv, args.images, args.group_column, size, work)
    overrides = dict(kv.split("=", 1) for kv in args.set)
    overrides.setdefault("device", args.device)
    if args.preset:
        overrides["model.preset"] = args.preset
    cfg = apply(TrainConfig(data=DataConfig(csv=str(csv), size=size)), overrides)
    return cfg, data.schema, make_sides(data)


def annotate(steps: common.AttrfitSteps) -> None:
    """Wrap the augmentation and the finite check in named profiler regions."""
    import attrfit.training.trainer as trainer

    aug, fin = trainer.augment_batch, trainer.check_finite

    def augment(*a, **k):
        with record_function("augment"):
            return aug(*a, **k)

    def finite(*a, **k):
        with record_function("finite_check"):
            return fin(*a, **k)

    trainer.augment_batch, trainer.check_finite = augment, finite


def main() -> int:
    args = parse_args()
    common.apply_threads(args.threads)
    cfg, schema, sides = load(args)
    steps = common.AttrfitSteps(cfg, schema, sides, total_steps=args.warmup + args.steps + 1)
    annotate(steps)
    for _ in range(args.warmup):
        steps.step()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=args.by_shape) as prof:
        for _ in range(args.steps):
            steps.step()
    wall = time.perf_counter() - t0
    rows, total_ms = breakdown(prof, args.steps)
    ops = sorted(prof.key_averages(group_by_input_shape=args.by_shape), key=lambda e: -e.self_cpu_time_total)
    top = [[e.key, e.self_cpu_time_total / args.steps / 1000, e.count // args.steps]
           + ([shapes(e.input_shapes)] if args.by_shape else []) for e in ops[: args.top]]
    tables = [common.markdown_table(["kind", "ms per step", "share"], rows + [["total", total_ms, 1.0]]),
              common.markdown_table(["op (self time)", "ms per step", "calls per step"]
                                    + (["input shapes"] if args.by_shape else []), top)]
    common.report("profile_step", args.out, tables, {
        "machine": common.machine(steps.t.device), "config": args.set, "steps": args.steps,
        "wall_s_profiled": wall, "images_per_s_profiled": args.steps * cfg.batch_size / wall,
        "kinds": rows, "top": top})
    return 0


if __name__ == "__main__":
    sys.exit(common.run_main(main))
