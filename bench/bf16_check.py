"""Which conv layers of attrfit's models are unsound in bf16 on this CPU, and what the check costs.

Runs :func:`attrfit.model.precision.guard_bf16` (the self-check every bf16 run makes at its start)
for each preset at several input sizes, at the training batch and the default evaluation
batch, and reports the layers it keeps in fp32, the worst error of the sound ones (in stds
of the fp32 output; a sound bf16 kernel is a few hundredths off) and the seconds it took.
On an AMD EPYC (AVX512-BF16) nothing is kept in fp32; on Intel Xeons with AMX, torch 2.13
gives garbage for 3x3 stride-2 convs on 4x2 inputs (docs/experiments/bf16.md).

    .venv/bin/python bench/bf16_check.py            # cpu-small and cpu-base, 5 sizes
    .venv/bin/python bench/bf16_check.py --quick    # one size, seconds
"""

from __future__ import annotations

import sys

import torch

import common
from attrfit.model.net import ModelConfig, build_model
from attrfit.model.precision import guard_bf16

SIZES = [(128, 64), (64, 32), (64, 64), (96, 48), (128, 128)]


def main() -> int:
    p = common.base_parser(__doc__, "bf16_check")
    p.add_argument("--batch-size", type=int, default=128, help="training batch checked forward and backward")
    p.add_argument("--eval-batch-size", type=int, default=512, help="evaluation batch checked forward")
    args = p.parse_args()
    common.apply_threads(args.threads)
    device = torch.device(args.device)
    presets = [args.preset] if args.preset else ["cpu-small"] if args.quick else ["cpu-small", "cpu-base"]
    sizes = [(64, 32)] if args.quick else SIZES
    batch, eval_batch = (16, 32) if args.quick else (args.batch_size, args.eval_batch_size)
    rows, results = [], []
    for preset in presets:
        model = build_model(ModelConfig(preset=preset), [2, 3]).to(device).to(memory_format=torch.channels_last)
        for size in sizes:
            c = guard_bf16(model, "bf16", device, size, batch, [eval_batch])
            results.append({"preset": preset, "size": list(size), **c.to_dict()})
            rows.append([preset, f"{size[0]}x{size[1]}", ", ".join(c.fp32_layers) or "none",
                         c.worst_sound_error, c.seconds])
    table = common.markdown_table(["preset", "size", "layers kept in fp32", "worst sound error (stds)",
                                   "check s"], rows)
    common.report("bf16_check", args.out, [table], {"machine": common.machine(device), "results": results,
                                                   "settings": {"batch": batch, "eval_batch": eval_batch}})
    return 0


if __name__ == "__main__":
    sys.exit(common.run_main(main))
