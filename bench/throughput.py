"""Training throughput: attrfit's training step against the pipeline the PyTorch tutorials teach.

    python bench/throughput.py                 # PETA (peta_heads.csv) at 128x64, batch 128
    python bench/throughput.py --csv my.csv --size 64x64 --group-column ''
    python bench/throughput.py --quick         # generated images, a few steps (a smoke run)

A, attrfit: images decoded once into the uint8 cache tensor (:func:`attrfit.data.load.load_data`),
batches gathered from it and trained with :func:`attrfit.training.loop.train_step` as ``attrfit train``
does: batched flip + translate on the tensor, channels_last, bf16 autocast where the CPU has
native bf16, one-cycle LR, a finiteness check of the loss every step.

B, hand-written: a ``Dataset`` whose ``__getitem__`` opens the image file with Pillow, resizes it
and applies a random flip and a padded random crop to that one sample, converts it like
``ToTensor`` + ``Normalize`` (numpy: torchvision is not a dependency), a shuffling
``DataLoader`` with one worker per core, fp32, NCHW, and a plain loop (SGD, cross-entropy per
head, ``loss.item()`` each step for the running loss).

Same model (:func:`attrfit.model.net.build_model`, same preset), batch size, input size and number
of steps. Rounds alternate A, B, A, B, ... so drift of the machine (other load, clocks) hits
both. Each round starts with untimed warm-up steps: for B a fresh ``DataLoader`` iterator, then
at least 2 batches per worker, so neither its worker start-up nor the batches its workers queued
ahead during the warm-up are timed; what is timed is the steady state. Reported: images/s per
round, the medians, and the median of the per-round ratios A/B.

Also the achieved FLOP/s of A (forward FLOPs per image from :func:`attrfit.model.net.count_flops`,
times 3 for forward + backward) against the machine's matmul peak measured in the same run
(square bf16 and fp32 ``torch.mm``, best of a few): how close the step is to the hardware limit.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

import common
from attrfit.data.cache import parse_size
from attrfit.recipe.config import TrainConfig, apply
from attrfit.data.load import DataConfig, load_data
from attrfit.model.net import build_model, count_flops
from attrfit.training.sides import make_sides

GOAL_RATIO = 5.0  # the target: attrfit >= 5x the hand-written pipeline
GOAL_PEAK = 0.5  # train step >= 50% of the bf16 matmul peak


# ---------------------------------------------------------------- B: the tutorial pipeline

class TutorialDataset(Dataset):
    """One sample per call, as the tutorials write it: open, Resize, RandomHorizontalFlip,
    RandomCrop(size, padding=4), ToTensor, Normalize. Random draws use torch (seeded per worker)."""

    def __init__(self, files: list[Path], labels: torch.Tensor, size: tuple[int, int], pad: int = 4,
                 mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)) -> None:
        self.files, self.labels, self.size, self.pad = files, labels, size, pad
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = self.size
        with Image.open(self.files[i]) as im:
            im = im.convert("RGB").resize((w, h), Image.Resampling.BILINEAR)
        if torch.rand(1).item() < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        a = np.pad(np.asarray(im), ((self.pad, self.pad), (self.pad, self.pad), (0, 0)))  # zero fill
        y0, x0 = (int(v) for v in torch.randint(0, 2 * self.pad + 1, (2,)))
        a = a[y0 : y0 + h, x0 : x0 + w]
        x = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float().div(255.0)  # 3 x H x W, 0..1
        return (x - self.mean) / self.std, self.labels[i]


def tutorial_loss(logits: tuple[torch.Tensor, ...], y: torch.Tensor) -> torch.Tensor:
    """Sum over heads of the mean cross-entropy of the labelled samples (-1 = missing)."""
    total = 0.0
    for j, out in enumerate(logits):
        labelled = (y[:, j] >= 0).sum().clamp(min=1)
        total = total + F.cross_entropy(out, y[:, j], ignore_index=-1, reduction="sum") / labelled
    return total


class Tutorial:
    """Model, optimizer and an endless batch stream of the hand-written pipeline."""

    def __init__(self, cfg: TrainConfig, num_classes: list[int], dataset: TutorialDataset, workers: int,
                 device: torch.device) -> None:
        torch.manual_seed(cfg.seed)
        # The dataset normalises, so the model's own normalisation is the identity.
        self.model = build_model(cfg.model, num_classes, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)).to(device).train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        self.dataset, self.workers, self.device = dataset, workers, device
        self.batch_size = cfg.batch_size
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.running_loss = 0.0

    def batches(self):
        """Epoch after epoch of a fresh shuffling DataLoader (workers restart each epoch, as in the tutorials)."""
        loader = DataLoader(self.dataset, batch_size=self.batch_size, shuffle=True, num_workers=self.workers,
                            drop_last=True, generator=self.generator, pin_memory=self.device.type == "cuda")
        while True:
            yield from loader

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = x.to(self.device), y.to(self.device)
        loss = tutorial_loss(self.model(x), y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.running_loss += loss.item()


def time_tutorial(b: Tutorial, warmup: int, steps: int) -> float:
    """Images/s over ``steps`` steps, after ``warmup`` untimed ones, on a fresh DataLoader iterator."""
    stream = b.batches()
    for x, y in itertools.islice(stream, warmup):
        b.step(x, y)
    common.sync(b.device)
    t0 = time.perf_counter()
    for x, y in itertools.islice(stream, steps):
        b.step(x, y)
    common.sync(b.device)
    seconds = time.perf_counter() - t0
    stream.close()  # ends the DataLoader iterator: its workers exit before A's round
    return steps * b.batch_size / seconds


# ---------------------------------------------------------------- the hardware limit

def matmul_peak(dtype: torch.dtype, n: int, reps: int, device: torch.device) -> float:
    """FLOP/s of the best of ``reps`` n x n by n x n ``torch.mm`` in ``dtype`` (2 n^3 FLOPs each)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)  # warm-up: thread pool, kernel choice
    best = float("inf")
    for _ in range(reps):
        common.sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        common.sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


# ---------------------------------------------------------------- the run

def settings(args) -> dict:
    if args.quick:
        return {"size": args.size or "64x32", "batch_size": args.batch_size or 32, "steps": args.steps or 3,
                "warmup": 1, "rounds": args.rounds or 2, "matmul_n": 1024, "matmul_reps": 2}
    return {"size": args.size or common.PETA_SIZE, "batch_size": args.batch_size or 128, "steps": args.steps or 30,
            "warmup": None, "rounds": args.rounds or 3, "matmul_n": 4096, "matmul_reps": 5}


def load(csv: Path, images: str | None, group_column: str | None, size: str, work: Path):
    work.mkdir(parents=True, exist_ok=True)  # attrfit writes the split file but not its folder
    cfg = DataConfig(csv=str(csv), images=images, group_column=group_column or None, size=size,
                     split=str(work / f"{csv.stem}.split.json"), cache_dir=str(work / "cache"))
    return load_data(cfg, progress=False)


def main() -> int:
    p = common.base_parser(__doc__, "throughput")
    common.add_data_args(p)
    p.add_argument("--batch-size", type=int, help="default 128 (--quick 32)")
    p.add_argument("--steps", type=int, help="timed steps per round (default 30)")
    p.add_argument("--rounds", type=int, help="A/B rounds (default 3)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers of B (default: os.cpu_count())")
    p.add_argument("--workdir", type=Path, default=common.RESULTS / "work", help="split and cache files")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override of attrfit's side, e.g. --set compile=true (repeatable)")
    args = p.parse_args()
    common.apply_threads(args.threads)
    s = settings(args)
    with tempfile.TemporaryDirectory(prefix="attrfit-bench-") as tmp:
        if args.quick:
            csv, work = common.make_people(Path(tmp) / "data"), Path(tmp)
        elif args.csv is None and not common.require_peta():
            return 0
        else:
            csv, work = args.csv or common.peta_csv("heads"), args.workdir
        return run(args, s, csv, work)


def run(args, s: dict, csv: Path, work: Path) -> int:
    device = torch.device(args.device)
    t0 = time.perf_counter()
    data = load(csv, args.images, args.group_column, s["size"], work)
    load_s = time.perf_counter() - t0
    overrides = {"batch_size": s["batch_size"], "device": args.device, "report": False}
    if args.preset:
        overrides["model.preset"] = args.preset
    overrides.update(dict(kv.split("=", 1) for kv in args.set))
    cfg = apply(TrainConfig(data=DataConfig(csv=str(csv), size=s["size"])), overrides)
    workers = args.workers or os.cpu_count() or 1
    # B's DataLoader holds up to 2 batches per worker in flight: warm up at least that many steps so the
    # queue filled while the first steps computed is spent before the timer starts (steady state).
    s["warmup"] = s["warmup"] or max(3, 2 * workers)
    sides = make_sides(data)
    a = common.AttrfitSteps(cfg, data.schema, sides, s["rounds"] * (s["warmup"] + s["steps"]))
    by_path = dict(zip(data.table.paths, data.table.abs_paths()))
    files = [by_path[data.image_paths[int(r)]] for r in data.sides["train"]]
    dataset = TutorialDataset(files, data.labels[data.sides["train"]], parse_size(s["size"]))
    b = Tutorial(cfg, data.schema.num_classes, dataset, workers, device)

    results = {**measure(a, b, s, device), "data_load_s": load_s}
    setup = {**s, "csv": str(csv), "train_images": len(sides.train_images), "heads": len(data.schema.heads),
             "preset": a.t.model.cfg.preset, "model": str(a.t.model.cfg), "attrfit_precision": a.t.precision,
             "attrfit_channels_last": cfg.channels_last, "handwritten_workers": workers,
             "handwritten_precision": "fp32", "quick": args.quick}
    common.report("throughput", args.out, tables(results, setup),
                  {"machine": common.machine(device), "settings": setup, "results": results})
    return 0


def measure(a: common.AttrfitSteps, b: Tutorial, s: dict, device: torch.device) -> dict:
    """A/B rounds, then the matmul peaks and the FLOP/s of A."""
    rates_a, rates_b = [], []
    for _ in range(s["rounds"]):  # A, B, A, B, ...: machine drift hits both
        rates_a.append(a.timed(s["warmup"], s["steps"]))
        rates_b.append(time_tutorial(b, s["warmup"], s["steps"]))
    ratios = [x / y for x, y in zip(rates_a, rates_b)]
    peak_bf16 = matmul_peak(torch.bfloat16, s["matmul_n"], s["matmul_reps"], device)
    peak_fp32 = matmul_peak(torch.float32, s["matmul_n"], s["matmul_reps"], device)
    fwd = count_flops(a.t.model, parse_size(s["size"]))
    achieved = 3 * fwd * common.median(rates_a)  # forward + backward (~2x forward)
    return {
        "attrfit_images_per_s": rates_a, "handwritten_images_per_s": rates_b, "ratios": ratios,
        "median_attrfit_images_per_s": common.median(rates_a),
        "median_handwritten_images_per_s": common.median(rates_b),
        "median_ratio": common.median(ratios),
        "forward_flops_per_image": fwd, "train_flops_per_image": 3 * fwd, "achieved_flops_per_s": achieved,
        "peak_bf16_matmul_flops_per_s": peak_bf16, "peak_fp32_matmul_flops_per_s": peak_fp32,
        "fraction_of_bf16_peak": achieved / peak_bf16, "fraction_of_fp32_peak": achieved / peak_fp32,
    }


def per_round(rates: list[float]) -> str:
    return ", ".join(f"{v:.0f}" for v in rates)


def tables(r: dict, setup: dict) -> list[str]:
    return [
        common.markdown_table(["pipeline", "images/s per round", "median images/s"], [
            [f"attrfit ({setup['attrfit_precision']}, channels_last, cached uint8)",
             per_round(r["attrfit_images_per_s"]), r["median_attrfit_images_per_s"]],
            [f"hand-written (Pillow per sample, DataLoader x{setup['handwritten_workers']}, fp32, NCHW)",
             per_round(r["handwritten_images_per_s"]), r["median_handwritten_images_per_s"]]]),
        common.markdown_table(["figure", "value", "goal"], [
            ["median ratio attrfit / hand-written", f"{r['median_ratio']:.2f}x", f">= {GOAL_RATIO:.0f}x"],
            ["train GFLOP per image (3 x forward)", r["train_flops_per_image"] / 1e9, ""],
            ["achieved GFLOP/s (attrfit)", r["achieved_flops_per_s"] / 1e9, ""],
            ["bf16 matmul peak GFLOP/s", r["peak_bf16_matmul_flops_per_s"] / 1e9, ""],
            ["fp32 matmul peak GFLOP/s", r["peak_fp32_matmul_flops_per_s"] / 1e9, ""],
            ["fraction of bf16 peak", f"{r['fraction_of_bf16_peak']:.1%}", f">= {GOAL_PEAK:.0%}"],
            ["fraction of fp32 peak", f"{r['fraction_of_fp32_peak']:.1%}", ""]]),
        f"{setup['size']} images, batch {setup['batch_size']}, {setup['rounds']} rounds x {setup['steps']} timed "
        f"steps (+{setup['warmup']} warm-up) each, model {setup['preset']}, {setup['train_images']} train images, "
        f"{setup['heads']} heads",
    ]


if __name__ == "__main__":
    raise SystemExit(common.run_main(main))
