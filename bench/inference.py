"""Inference throughput: attrfit's prediction from pixels against the hand-written eval loop.

    python bench/inference.py                  # PETA test images at 128x64, batch 64
    python bench/inference.py --compile        # also a frozen torch.compile of attrfit's model
    python bench/inference.py --quick          # generated images, a smoke run

The training benchmark (bench/throughput.py) measured the same way, for prediction:

A, attrfit: :meth:`attrfit.serving.predict.Predictor.predict_pixels` on uint8 N x 3 x H x W pixels
(what ``attrfit predict`` runs after decoding): batches of 64, channels_last, bf16 autocast where the
CPU has native bf16 (after the bf16 self-check, as ``Predictor.from_checkpoint`` does), softmax per head.

B, hand-written: the eval loop of the tutorials: ``model.eval()``, ``torch.no_grad()``, each batch
converted like ``ToTensor`` + ``Normalize`` (float, / 255, minus mean, over std), fp32, NCHW, softmax.

C (``--compile``): A with ``attrfit predict --compile``'s model (:func:`attrfit.serving.predict.compile_frozen`:
inductor with the weights frozen as constants, BatchNorm folded into the convolutions, ReLU fused), its
compile time reported apart.

Same model (:func:`attrfit.model.net.build_model`, freshly initialised: the weights' values do not change
the work), same images (the test side of the split), same batch size. Rounds alternate A, B[, C], so
drift of a shared machine hits all; each round starts with an untimed warm-up batch. Reported: images/s
per round and median, the median ratio A/B, and the achieved forward GFLOP/s against the bf16 matmul
peak measured in the same run.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

import common
import throughput
from attrfit.data.cache import parse_size
from attrfit.model.net import build_model, count_flops
from attrfit.model.precision import guard_bf16, resolve_precision
from attrfit.recipe.config import TrainConfig
from attrfit.serving.predict import Predictor, compile_frozen

BATCH = 64  # attrfit predict's default (PREDICT_BATCH)


def handwritten(model: torch.nn.Module, images: torch.Tensor, batch: int) -> None:
    """The tutorials' eval loop: float, / 255, Normalize, fp32 NCHW, no_grad, softmax."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = (images[start : start + batch].float().div(255.0) - mean) / std
            [p.softmax(1) for p in model(x)]


def rate(run, n: int, device: torch.device) -> float:
    common.sync(device)
    t0 = time.perf_counter()
    run()
    common.sync(device)
    return n / (time.perf_counter() - t0)


def build_sides(data, size: tuple[int, int], device: torch.device, compile_: bool):
    """(name, callable over the pixels) per side; the compiled side's compile time."""
    num_classes = data.schema.num_classes
    torch.manual_seed(0)
    cfg = TrainConfig().model
    model = build_model(cfg, num_classes).to(device).eval().to(memory_format=torch.channels_last)
    precision = resolve_precision("auto", device)
    guard_bf16(model, precision, device, size, None, [BATCH])
    pred = Predictor(model, data.schema, size, "stretch", device, precision)
    plain = build_model(cfg, num_classes, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)).to(device).eval()
    sides = {"attrfit": lambda x: pred.predict_pixels(x, BATCH, tta=False),
             "hand-written": lambda x: handwritten(plain, x.contiguous(), BATCH)}
    compile_s = None
    if compile_:
        frozen = Predictor(compile_frozen(model, device), data.schema, size, "stretch", device, precision,
                           compiled=True)
        t0 = time.perf_counter()
        frozen.predict_pixels(data.images[:BATCH], BATCH, tta=False)
        compile_s = time.perf_counter() - t0
        sides["attrfit compiled"] = lambda x: frozen.predict_pixels(x, BATCH, tta=False)
    return sides, precision, compile_s


def main() -> int:
    p = common.base_parser(__doc__, "inference")
    common.add_data_args(p)
    p.add_argument("--images-per-round", type=int, default=2048, help="timed images per side and round")
    p.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    p.add_argument("--compile", action="store_true", help="also time a frozen torch.compile of attrfit's model")
    p.add_argument("--workdir", type=Path, default=common.RESULTS / "work", help="split and cache files")
    args = p.parse_args()
    common.apply_threads(args.threads)
    if args.quick:
        args.images_per_round, args.rounds = BATCH * 2, 2
        csv = common.make_people(common.RESULTS / "work" / "people")
    elif args.csv is None and not common.require_peta():
        return 0
    else:
        csv = args.csv or common.peta_csv("heads")
    size = args.size or ("64x32" if args.quick else common.PETA_SIZE)
    return run(args, csv, size)


def run(args, csv: Path, size: str) -> int:
    device = torch.device(args.device)
    data = throughput.load(csv, args.images, args.group_column, size, args.workdir)
    hw = parse_size(size)
    test = data.images[data.sides["test"]]
    n = min(args.images_per_round, len(test))
    pixels = test[:n]  # channels_last uint8, as Predictor.predict_pixels gets them from stack_pixels
    sides, precision, compile_s = build_sides(data, hw, device, args.compile)
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, side in sides.items():
            side(pixels[:BATCH])  # warm-up
            rates[name].append(rate(lambda: side(pixels), n, device))
    results = summarise(rates, count_flops(build_model(TrainConfig().model, data.schema.num_classes), hw),
                        device, args.quick)
    setup = {"csv": str(csv), "size": size, "batch": BATCH, "images_per_round": n, "rounds": args.rounds,
             "attrfit_precision": precision, "compile_s": compile_s, "quick": args.quick}
    common.report("inference", args.out, tables(results, setup),
                  {"machine": common.machine(device), "settings": setup, "results": results})
    return 0


def summarise(rates: dict[str, list[float]], fwd_flops: float, device: torch.device, quick: bool) -> dict:
    n, reps = (1024, 2) if quick else (4096, 5)
    peak = throughput.matmul_peak(torch.bfloat16, n, reps, device)
    ratios = [a / b for a, b in zip(rates["attrfit"], rates["hand-written"])]
    medians = {name: common.median(r) for name, r in rates.items()}
    return {"images_per_s": rates, "median_images_per_s": medians, "ratios": ratios,
            "median_ratio": common.median(ratios), "forward_flops_per_image": fwd_flops,
            "peak_bf16_matmul_flops_per_s": peak,
            "fraction_of_bf16_peak": {name: m * fwd_flops / peak for name, m in medians.items()}}


def tables(r: dict, setup: dict) -> list[str]:
    rows = [[name, ", ".join(f"{v:.0f}" for v in rates), r["median_images_per_s"][name],
             r["median_images_per_s"][name] * r["forward_flops_per_image"] / 1e9,
             f"{r['fraction_of_bf16_peak'][name]:.1%}"] for name, rates in r["images_per_s"].items()]
    return [
        common.markdown_table(["pipeline", "images/s per round", "median images/s", "GFLOP/s", "of bf16 peak"], rows),
        f"median ratio attrfit / hand-written: {r['median_ratio']:.2f}x; bf16 matmul peak "
        f"{r['peak_bf16_matmul_flops_per_s'] / 1e9:.0f} GFLOP/s; attrfit precision {setup['attrfit_precision']}; "
        f"{setup['size']} images, batch {setup['batch']}, {setup['rounds']} rounds x {setup['images_per_round']} "
        f"images" + (f"; compile {setup['compile_s']:.1f} s" if setup["compile_s"] is not None else ""),
    ]


if __name__ == "__main__":
    raise SystemExit(common.run_main(main))
