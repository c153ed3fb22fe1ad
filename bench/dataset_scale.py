"""How each step grows with the dataset: 10,000 to 100,000 generated images at 256x128 (PA-100k's size).

    python bench/dataset_scale.py                      # 10k, 30k, 100k images (about 30 minutes, ~3 GB of disk)
    python bench/dataset_scale.py --sizes 10000,30000  # fewer
    python bench/dataset_scale.py --quick              # 200 and 400 small images (a smoke run, under a minute)

Images are generated once (256x128 JPEGs of smooth shapes, PA-100k-like: ``data/NNNNNN.jpg`` and
an ``annotation.mat`` with 26 attributes and the 80/10/10 train/val/test lists); each size uses
the first N. Each step then runs as its own ``attrfit`` process, so its wall time and peak
resident memory (``VmHWM``) are its own:

1. import: ``attrfit dataset pa100k annotation.mat`` (read the .mat, find and open every image,
   write the CSV and the official split file, hash every image for cross-side duplicates);
2. split: ``attrfit split labels.csv`` (a new seeded split of the table: read it, split, hash);
3. cache build: ``attrfit prepare`` on the official split (read the table, verify the split,
   decode and resize every image into the memory-mapped uint8 cache at ``--size``);
4. one epoch: ``attrfit train --epochs 1`` on the warm cache (with validation and the test scoring);
5. evaluate: ``attrfit evaluate RUN`` (the test side).

The claim checked: no step grows faster than linearly (the seconds per 1,000 images stay flat),
and peak memory is bounded by the memory-mapped cache, not by the table. Run it on a quiet
machine: another process on 2 cores slows torch ~10x.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

import common
from data_and_inference import HWM_WRAPPER

STEPS = ("import", "split", "cache build", "one epoch", "evaluate")
ATTRIBUTES = ("Female", "AgeOver60", "Age18-60", "AgeLess18", "Front", "Side", "Back", "Hat", "Glasses", "HandBag",
              "ShoulderBag", "Backpack", "HoldObjectsInFront", "ShortSleeve", "LongSleeve", "UpperStride", "UpperLogo",
              "UpperPlaid", "UpperSplice", "LowerStripe", "LowerPattern", "LongCoat", "Trousers", "Shorts",
              "Skirt&Dress", "boots")


# ---------------------------------------------------------------- generated data

def make_images(folder: Path, n: int, hw: tuple[int, int], seed: int = 0) -> None:
    """n smooth person-like JPEGs (small files), made once: existing ones are kept."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = hw
    for i in range(n):
        path = folder / f"{i + 1:06d}.jpg"
        colours = rng.integers(0, 256, (3, 3))
        if path.exists():
            continue
        im = Image.new("RGB", (w, h), tuple(int(c) for c in colours[0]))
        d = ImageDraw.Draw(im)
        d.ellipse((w * 0.35, h * 0.05, w * 0.65, h * 0.2), fill=tuple(int(c) for c in colours[1]))
        d.rectangle((w * 0.25, h * 0.2, w * 0.75, h * 0.6), fill=tuple(int(c) for c in colours[2]))
        d.rectangle((w * 0.3, h * 0.6, w * 0.7, h * 0.95), fill=tuple(int(c) for c in colours[1][::-1]))
        im.save(path, quality=85)


def write_annotation(root: Path, n: int, seed: int = 0) -> Path:
    """PA-100k's annotation.mat for the first n images: 80/10/10 train/val/test lists, 26 attributes."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    labels = (rng.random((n, len(ATTRIBUTES))) < 0.3).astype(np.uint8)
    labels[:, 1:4] = np.eye(3, dtype=np.uint8)[rng.integers(0, 3, n)]
    cuts = (int(n * 0.8), int(n * 0.9))
    names = np.empty((n, 1), dtype=object)
    names[:, 0] = [f"{i + 1:06d}.jpg" for i in range(n)]
    variables = {"attributes": np.array([[a] for a in ATTRIBUTES], dtype=object)}
    for side, (a, b) in {"train": (0, cuts[0]), "val": cuts, "test": (cuts[1], n)}.items():
        variables[f"{side}_images_name"], variables[f"{side}_label"] = names[a:b], labels[a:b]
    path = root / "annotation.mat"
    savemat(path, variables)
    return path


# ---------------------------------------------------------------- the steps, each its own process

def run_step(args: list[str], env: dict) -> dict:
    """``attrfit ARGS`` in a child process: its wall seconds and peak resident memory (VmHWM)."""
    cmd = [sys.executable, "-c", HWM_WRAPPER, *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    seconds = time.perf_counter() - t0
    err = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"step failed (exit {proc.returncode}): attrfit {' '.join(args)}\n{err[-2000:]}")
    hwm = [line.split()[1] for line in err.splitlines() if line.startswith("VmHWM:")]
    return {"seconds": seconds, "peak_rss_mib": int(hwm[-1]) / 1024 if hwm else None,
            "command": "attrfit " + " ".join(args)}


def bench_size(n: int, images: Path, work: Path, size: str, train_args: list[str], env: dict) -> dict:
    root = work / f"n{n}"
    shutil.rmtree(root, ignore_errors=True)
    (root / "data").mkdir(parents=True)
    for i in range(n):  # the first n images, linked (not copied)
        os.symlink(images / f"{i + 1:06d}.jpg", root / "data" / f"{i + 1:06d}.jpg")
    mat = write_annotation(root, n)
    out, cache, run = root / "out", root / "cache", root / "run"
    csv, split = str(out / "labels.csv"), str(out / "official.split.json")
    steps = {
        "import": run_step(["dataset", "pa100k", str(mat), "--out", str(out)], env),
        "split": run_step(["split", csv, "--out", str(root / "seeded.split.json")], env),
        "cache build": run_step(["prepare", csv, "--split", split, "--size", size, "--cache-dir", str(cache)], env),
        "one epoch": run_step(["train", csv, "--split", split, "--size", size, "--cache-dir", str(cache), "--epochs", "1",
                               "--run-dir", str(run), "--no-report", "--quiet", *train_args], env),
        "evaluate": run_step(["evaluate", str(run)], env),
    }
    cache_mib = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 2**20
    shutil.rmtree(root, ignore_errors=True)
    return {"images": n, "cache_mib": cache_mib, "steps": steps}


# ---------------------------------------------------------------- growth and the tables

def growth(results: list[dict]) -> dict:
    """Per step: seconds per 1,000 images at each size, and the largest size's over the smallest's."""
    out = {}
    for step in STEPS:
        per_k = [r["steps"][step]["seconds"] / r["images"] * 1000 for r in results]
        out[step] = {"seconds_per_1000": per_k, "ratio_largest_to_smallest": per_k[-1] / per_k[0]}
    return out


def tables(results: list[dict], grow: dict) -> list[str]:
    sizes = [f"{r['images']:,}" for r in results]
    time_rows = [[step] + [r["steps"][step]["seconds"] for r in results] + [grow[step]["ratio_largest_to_smallest"]]
                 for step in STEPS]
    memory_rows = [[step] + [r["steps"][step]["peak_rss_mib"] for r in results] for step in STEPS]
    memory_rows.append(["(the cache file, MiB)"] + [r["cache_mib"] for r in results])
    return [common.markdown_table(["seconds"] + sizes + ["s per 1k images, largest / smallest"], time_rows),
            common.markdown_table(["peak RSS, MiB"] + sizes, memory_rows)]


def main() -> int:
    p = common.base_parser(__doc__, "dataset_scale")
    p.add_argument("--sizes", default="10000,30000,100000", help="images per run, comma-separated")
    p.add_argument("--size", help="HxW of the cache and the model input (default 128x64; --quick 32x16)")
    p.add_argument("--workdir", type=Path, default=common.RESULTS / "dataset_scale",
                   help="generated images (kept for the next run) and each size's files (removed after it)")
    args = p.parse_args()
    sizes = [200, 400] if args.quick else [int(s) for s in args.sizes.split(",")]
    image_hw, size = ((64, 32), args.size or "32x16") if args.quick else ((256, 128), args.size or "128x64")
    work = args.workdir / ("quick" if args.quick else "full")
    images = work / "images"
    t0 = time.perf_counter()
    make_images(images, max(sizes), image_hw)
    generate_s = time.perf_counter() - t0
    train_args = ["--device", args.device] + (["--preset", args.preset] if args.preset else [])
    train_args += ["--threads", str(args.threads)] if args.threads else []
    train_args += ["--width", "8", "--stages", "2", "--batch-size", "32", "--precision", "fp32"] if args.quick else []
    env = {**os.environ, "ATTRFIT_PROGRESS": "0"}
    results = [bench_size(n, images, work, size, train_args, env) for n in sizes]
    if args.quick:
        shutil.rmtree(work, ignore_errors=True)
    grow = growth(results)
    settings = {"sizes": sizes, "image_hw": list(image_hw), "size": size, "quick": args.quick,
                "generate_s": generate_s, "train_args": train_args}
    common.report("dataset_scale", args.out, tables(results, grow),
                  {"machine": common.machine(torch.device(args.device)), "settings": settings,
                   "results": {"runs": results, "growth": grow}})
    return 0


if __name__ == "__main__":
    raise SystemExit(common.run_main(main))
