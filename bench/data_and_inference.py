"""Data and inference: image cache build and reload, peak memory of training, prediction speed.

    python bench/data_and_inference.py            # PETA (19,000 images) at 128x64
    python bench/data_and_inference.py --csv my.csv --size 64x64 --group-column ''
    python bench/data_and_inference.py --quick    # 120 generated images (a smoke run)

1. Cache: decode every image of the CSV into a fresh cache folder (:func:`attrfit.data.cache.load_or_build`:
   Pillow in a thread pool, resize, one uint8 tensor saved to disk), then load it again (the
   cache key stats every image file; the tensor is memory-mapped), then read every pixel once (what
   training's first gather costs), and ``load_data`` end to end on the warm cache (table, split
   check, cache). The reload follows the build at once, so the file is in the OS page cache: a
   reload after a reboot reads it from disk.
2. Peak resident memory of a one-epoch ``attrfit train`` run in a child process (its ``VmHWM``,
   which exec resets; ``ru_maxrss`` would include this process's size at the fork), on the cache built in 1.
3. Prediction images/s with that run's checkpoint through ``attrfit.load(run)`` at batch 1 and
   batch 64: from decoded pixels (the model alone, ``predict_pixels``) and from image files
   (decode + model, ``predict``). Where ``attrfit.serving.predict`` is missing it times
   :func:`attrfit.evaluation.scoring.predict_probs` on the same pixels and :func:`attrfit.data.cache.decode_image`
   plus ``predict_probs`` for the files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import common
from attrfit.data.cache import decode_image, load_or_build, parse_size
from attrfit.data.load import DataConfig, load_data
from attrfit.data.table import read_table

GOAL_BUILD_S = 20.0  # PETA cache build
GOAL_RELOAD_S = 2.0  # PETA cache reload


# ---------------------------------------------------------------- 1. the cache

def bench_cache(csv: Path, images: str | None, group_column: str | None, size: str, work: Path) -> dict:
    table = read_table(csv, images=images, group_column=group_column or None)
    paths, abs_paths, hw = table.paths, table.abs_paths(), parse_size(size)
    cache_dir = work / "cache"
    shutil.rmtree(cache_dir, ignore_errors=True)  # a fresh build, every time
    t0 = time.perf_counter()
    built = load_or_build(paths, abs_paths, hw, "stretch", cache_dir, progress=False)
    build_s = time.perf_counter() - t0
    del built
    t0 = time.perf_counter()
    cache = load_or_build(paths, abs_paths, hw, "stretch", cache_dir, progress=False)
    reload_s = time.perf_counter() - t0
    checksum = int(cache.images.sum(dtype=torch.int64))  # touches every page of the memory map
    read_s = time.perf_counter() - t0
    cfg = DataConfig(csv=str(csv), images=images, group_column=group_column or None, size=size,
                     split=str(work / f"{csv.stem}.split.json"), cache_dir=str(cache_dir))
    load_data(cfg, progress=False)  # makes the split file
    t0 = time.perf_counter()
    load_data(cfg, progress=False)
    load_data_s = time.perf_counter() - t0
    file = next(cache_dir.glob("*.pt"))
    return {"images": len(cache.paths), "size": size, "build_s": build_s, "reload_s": reload_s,
            "reload_and_read_s": read_s, "load_data_warm_s": load_data_s,
            "file_mib": file.stat().st_size / 2**20, "pixel_checksum": checksum,
            "decode_workers": min(8, (os.cpu_count() or 1) + 1)}


# ---------------------------------------------------------------- 2. peak memory of training

def bench_train_memory(csv: Path, images: str | None, group_column: str | None, size: str, work: Path,
                       args, batch_size: int) -> dict:
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    cmd = [sys.executable, "-c", HWM_WRAPPER, "train", str(csv), "--size", size, "--epochs", "1",
           "--batch-size", str(batch_size), "--split", str(work / f"{csv.stem}.split.json"),
           "--cache-dir", str(work / "cache"), "--run-dir", str(run), "--device", args.device,
           "--no-report", "--quiet"]
    cmd += ["--images", images] if images else []
    cmd += ["--group-column", group_column] if group_column else []
    cmd += ["--preset", args.preset] if args.preset else []
    cmd += ["--threads", str(args.threads)] if args.threads else []
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (not all children's)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"the training run failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                         + stderr.decode(errors="replace")[-2000:])
    hwm = [line.split()[1] for line in stderr.decode(errors="replace").splitlines() if line.startswith("VmHWM:")]
    peak_kib = int(hwm[-1]) if hwm else usage.ru_maxrss  # both in KiB on Linux
    return {"peak_rss_mib": peak_kib / 1024, "seconds": seconds, "epochs": 1, "batch_size": batch_size,
            "run": str(run), "command": " ".join(["python -m attrfit"] + cmd[3:])}


# The child's own peak RSS. ru_maxrss from wait4 is not it: a forked child starts with the
# parent's resident size as its maximum (this benchmark holds the 446 MiB cache), so it read
# 4.3 GiB where /usr/bin/time read 1.7 GiB for the same run. VmHWM is reset by exec.
HWM_WRAPPER = (
    "import runpy, sys\n"
    "sys.argv = ['attrfit'] + sys.argv[1:]\n"
    "try:\n"
    "    runpy.run_module('attrfit', run_name='__main__')\n"
    "finally:\n"
    "    try:\n"
    "        print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM:')).strip(), file=sys.stderr)\n"
    "    except OSError:\n"
    "        pass\n"
)


# ---------------------------------------------------------------- 3. prediction

class Inference:
    """Prediction from decoded pixels (uint8 N x 3 x H x W) and from files, via ``attrfit.load`` when present."""

    def __init__(self, run: Path, device: str) -> None:
        try:
            import attrfit

            self.predictor = attrfit.load(run, device=device)
            self.api = "attrfit.load(run).predict"
            self.size = self.predictor.size
        except (ImportError, AttributeError):
            self._fallback(run, device)

    def _fallback(self, run: Path, device: str) -> None:
        from attrfit.model import checkpoint
        from attrfit.evaluation.scoring import inference_precision
        from attrfit.model.checkpoint import model_from_checkpoint

        ckpt = checkpoint.load(checkpoint.resolve(str(run)))
        self.predictor, self.device = None, torch.device(device)
        self.model = model_from_checkpoint(ckpt).to(self.device).to(memory_format=torch.channels_last)
        self.precision = inference_precision(ckpt, self.device)
        self.size = parse_size(ckpt["data"]["size"])
        self.api = "attrfit.evaluation.scoring.predict_probs"

    def pixels(self, x: torch.Tensor, batch_size: int) -> None:
        if self.predictor is not None:
            self.predictor.predict_pixels(x, batch_size=batch_size)
        else:
            from attrfit.evaluation.scoring import predict_probs

            predict_probs(self.model, x, self.device, self.precision, batch_size)

    def files(self, paths: list[Path], batch_size: int) -> None:
        if self.predictor is not None:
            self.predictor.predict([str(p) for p in paths], batch_size=batch_size)
        else:
            x = torch.stack([torch.from_numpy(decode_image(p, self.size)).permute(2, 0, 1) for p in paths])
            self.pixels(x, batch_size)


def rate(fn, items, batch_size: int, per_call: int) -> float:
    """Images/s of ``fn(items[i:i + per_call], batch_size)`` over all items, after one untimed call."""
    fn(items[:per_call], batch_size)
    t0 = time.perf_counter()
    for i in range(0, len(items), per_call):
        fn(items[i : i + per_call], batch_size)
    return len(items) / (time.perf_counter() - t0)


def bench_predict(run: Path, files: list[Path], device: str, n_batch1: int, n_batch64: int) -> dict:
    inf = Inference(run, device)
    x = torch.stack([torch.from_numpy(decode_image(p, inf.size)).permute(2, 0, 1) for p in files[:n_batch64]])
    return {
        "api": inf.api,
        "pixels_batch1_images_per_s": rate(inf.pixels, x[:n_batch1], 1, 1),
        "pixels_batch64_images_per_s": rate(inf.pixels, x, 64, 64),
        "files_batch1_images_per_s": rate(inf.files, files[:n_batch1], 1, 1),
        "files_batch64_images_per_s": rate(inf.files, files[:n_batch64], 64, len(files[:n_batch64])),
        "images_batch1": n_batch1, "images_batch64": n_batch64,
    }


# ---------------------------------------------------------------- main

def tables(r: dict, size: str) -> list[str]:
    c, m, pr = r["cache"], r["train_memory"], r["predict"]
    return [
        common.markdown_table(["figure", "value", "goal"], [
            [f"cache build, {c['images']} images at {size} (decode + resize + save)", f"{c['build_s']:.2f} s",
             f"< {GOAL_BUILD_S:.0f} s"],
            ["cache reload (key check + memory map)", f"{c['reload_s']:.2f} s", f"< {GOAL_RELOAD_S:.0f} s"],
            ["cache reload + read every pixel", f"{c['reload_and_read_s']:.2f} s", ""],
            ["load_data on the warm cache (table + split check + cache)", f"{c['load_data_warm_s']:.2f} s", ""],
            ["cache file", f"{c['file_mib']:.0f} MiB", ""],
            [f"peak RSS of a 1-epoch training run (batch {m['batch_size']})", f"{m['peak_rss_mib']:.0f} MiB", ""],
        ]),
        common.markdown_table(["prediction (" + pr["api"] + ")", "batch 1 images/s", "batch 64 images/s"], [
            ["decoded pixels (model only)", pr["pixels_batch1_images_per_s"], pr["pixels_batch64_images_per_s"]],
            ["image files (decode + model)", pr["files_batch1_images_per_s"], pr["files_batch64_images_per_s"]],
        ]),
    ]


def main() -> int:
    p = common.base_parser(__doc__, "data_and_inference")
    common.add_data_args(p)
    p.add_argument("--workdir", type=Path, default=common.RESULTS / "data_and_inference",
                   help="cache, split and run of this benchmark (the cache is rebuilt every time)")
    args = p.parse_args()
    common.apply_threads(args.threads)
    if not args.quick and args.csv is None and not common.require_peta():
        return 0
    with tempfile.TemporaryDirectory(prefix="attrfit-bench-") as tmp:
        if args.quick:  # generated images, everything in a temp folder
            work, size, batch, n1, n64 = Path(tmp), args.size or "64x32", 32, 8, 64
            csv = common.make_people(work / "data", n=120)
        else:
            work, size, batch, n1, n64 = args.workdir, args.size or common.PETA_SIZE, 128, 128, 512
            csv = args.csv or common.peta_csv("heads")
        work.mkdir(parents=True, exist_ok=True)
        cache = bench_cache(csv, args.images, args.group_column, size, work)
        memory = bench_train_memory(csv, args.images, args.group_column, size, work, args, batch)
        table = read_table(csv, images=args.images, group_column=args.group_column or None)
        predict = bench_predict(Path(memory["run"]), table.abs_paths(), args.device, n1, n64)
        shutil.rmtree(work / "cache", ignore_errors=True)  # rebuilt by every run (~0.5 GB for PETA)
    results = {"cache": cache, "train_memory": memory, "predict": predict}
    settings = {"csv": str(csv), "size": size, "quick": args.quick, "group_column": args.group_column}
    common.report("data_and_inference", args.out, tables(results, size),
                  {"machine": common.machine(torch.device(args.device)), "settings": settings, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(common.run_main(main))
