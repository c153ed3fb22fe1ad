"""Shared pieces of the benchmark scripts: paths, the machine, generated data, output.

Every script prints a small Markdown table and the command line that produced it, and
writes one JSON file (``--out``, default ``bench/results/<name>.json``) holding every
figure, the settings and the machine, so BENCHMARKS.md can be rebuilt from the files.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"  # git-ignored
PETA = REPO.parent / "shared" / "data" / "peta"  # read-only; absent on most machines
PETA_CSVS = {"heads": "peta_heads.csv", "35": "peta35.csv"}
PETA_SIZE = "128x64"  # the default CPU setting for PETA: people are tall


# ---------------------------------------------------------------- command line

def base_parser(description: str, name: str) -> argparse.ArgumentParser:
    """Options every script has: --quick, --out, --device, --preset, --threads."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run on tiny data (under a minute); figures mean nothing")
    p.add_argument("--out", type=Path, default=RESULTS / f"{name}.json", help="JSON file of all figures "
                   f"(default bench/results/{name}.json)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    p.add_argument("--preset", default=None, help="model preset (default cpu-small; e.g. gpu-base with --device cuda)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (default 0: torch's default, one per core)")
    return p


def run_main(main) -> int:
    """``main()``'s exit code; a user mistake (AttrfitError) is one line on stderr and exit 2, as in the CLI.

    The process keeps freed memory as the ``attrfit`` command's does (``attrfit.core.memory``), so
    what is timed here is what the tool runs; a hand-written pipeline timed in the same process
    gets it too.
    """
    from attrfit.core.errors import AttrfitError
    from attrfit.core.memory import keep_freed_memory

    keep_freed_memory()
    try:
        return main()
    except AttrfitError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2


def apply_threads(threads: int) -> None:
    if threads:
        torch.set_num_threads(threads)


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])


def peta_csv(which: str) -> Path:
    return PETA / PETA_CSVS[which]


def require_peta() -> bool:
    """True where PETA is here; otherwise say how to run without it (the caller exits 0: a skip)."""
    if (PETA / PETA_CSVS["heads"]).is_file():
        return True
    print(f"skipped: PETA not found at {PETA} (see ../shared/data/README.md); "
          "pass --csv to benchmark another dataset, or --quick for generated data", file=sys.stderr)
    return False


# ---------------------------------------------------------------- the machine

def machine(device: torch.device) -> dict:
    """CPU model, cores, torch version and threads (attrfit's own record), plus bf16 support and the GPU."""
    from attrfit.core.runs import environment
    from attrfit.model.precision import cpu_has_fast_bf16

    env = environment()
    env["cpu_fast_bf16"] = cpu_has_fast_bf16()
    env["device"] = str(device)
    env["time"] = time.strftime("%Y-%m-%d %H:%M:%S")
    try:
        env["load_average_1m"] = os.getloadavg()[0]  # > cores means the figures are shared-machine noise
    except OSError:
        pass
    return env


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer measures the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- attrfit's training step, timed

class AttrfitSteps:
    """attrfit's trainer stepping through the cached train images as ``attrfit.training.loop.train_epochs`` does.

    Batches are gathered from the uint8 train tensor in :func:`attrfit.training.loop.epoch_order`
    (on a GPU from the copy kept there, :func:`attrfit.training.sides.device_sides`), trained
    with :func:`attrfit.training.loop.train_step` at the one-cycle LR of the step, and the loss
    is checked for NaN every step on the CPU (a sync, as the training loop does there).
    Consecutive :meth:`timed` calls continue the same batch order and schedule.
    """

    def __init__(self, cfg, schema, sides, total_steps: int) -> None:
        from attrfit.training.distributed import Dist
        from attrfit.training.trainer import build_trainer
        from attrfit.training.sides import device_sides

        self.t = build_trainer(cfg, schema, sides, float(cfg.optim.lr), Dist())
        self.t.total_steps = total_steps  # the one-cycle schedule spans all the steps timed
        sides = device_sides(sides, self.t.device)  # as the training loop does
        self.sides, self.step_no, self.batch_size = sides, 0, cfg.batch_size
        self._batches = self._indices()

    def _indices(self):
        from attrfit.training.trainer import epoch_order

        n, bs = len(self.sides.train_images), self.batch_size
        for epoch in itertools.count():
            order = epoch_order(n, self.t.cfg.seed, epoch).to(self.sides.train_images.device)
            for i in range(n // bs):
                yield order[i * bs : (i + 1) * bs]

    def step(self) -> None:
        from attrfit.recipe.schedule import lr_at, momentum_at
        from attrfit.training.trainer import check_finite, train_step
        from attrfit.training.sides import gather

        t, cfg, idx = self.t, self.t.cfg, next(self._batches)
        x, y = gather(self.sides.train_images, self.sides.train_labels, idx, t.device)
        lr = lr_at(self.step_no, t.total_steps, t.max_lr, cfg.schedule)
        mom = momentum_at(self.step_no, t.total_steps, cfg.schedule, cfg.optim.momentum)
        loss, per_head, _ = train_step(t, x, y, self.step_no, lr, mom)
        self.step_no += 1
        if t.device.type == "cpu":
            check_finite(t, loss, per_head, self.step_no)

    def timed(self, warmup: int, steps: int) -> float:
        """Images/s over ``steps`` steps after ``warmup`` untimed ones."""
        for _ in range(warmup):
            self.step()
        sync(self.t.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        sync(self.t.device)
        return steps * self.batch_size / (time.perf_counter() - t0)


# ---------------------------------------------------------------- generated data for --quick

def make_people(root: Path, n: int = 200, seed: int = 0) -> Path:
    """n PETA-like images: tall crops of mixed sizes and formats (jpg, png).

    Heads ``color`` (dominant channel: blue/green/red) and ``bright`` (dark/light), a
    ``person_id`` column (3 images per person). Returns the CSV path.
    """
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = ["image_path,person_id,color,bright"]
    for i in range(n):
        c, bright = i % 3, (i // 3) % 2
        h = int(rng.integers(60, 160))
        w = max(16, h // 2 + int(rng.integers(-8, 9)))
        a = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
        a[..., 2 - c] += np.uint8(120 + 60 * bright)
        name = f"images/{i}.{'png' if i % 4 == 0 else 'jpg'}"
        Image.fromarray(a).save(root / name)
        lines.append(f"{name},p{i // 3},{('blue', 'green', 'red')[c]},{('dark', 'light')[bright]}")
    path = root / "labels.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def subset_csv(src: Path, dst: Path, n: int, seed: int = 0, skip=("image_path", "person_id")) -> Path:
    """About n seeded random rows of ``src``, with every class of every column in at least 2 rows
    (a head left with one class is an error), image paths unchanged: pass --images src's folder."""
    with open(src, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns, rows = list(reader.fieldnames), list(reader)
    rng = np.random.default_rng(seed)
    keep: set[int] = set()
    for col in (c for c in columns if c not in skip):
        by_value: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            by_value.setdefault(r[col], []).append(i)
        for value, idx in by_value.items():
            keep.update(int(i) for i in rng.choice(idx, size=min(2, len(idx)), replace=False))
    rest = np.setdiff1d(np.arange(len(rows)), sorted(keep))
    keep.update(int(i) for i in rng.choice(rest, size=max(0, min(n - len(keep), len(rest))), replace=False))
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows[i] for i in sorted(keep))
    return dst


# ---------------------------------------------------------------- output

def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"
    return "" if v is None else str(v)


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def report(name: str, out: Path, tables: list[str], payload: dict) -> None:
    """Print the tables and the command line; write the JSON (command, machine, settings, results)."""
    command = command_line()
    for t in tables:
        print(t)
        print()
    print(f"command: `{command}`")
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": name, "command": command, **payload}
    out.write_text(json.dumps(doc, indent=1, default=_plain) + "\n", encoding="utf-8")
    print(f"wrote {out}")


def _plain(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, torch.device):
        return str(v)
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def run_probs(run: Path, side: str):
    """A run's best checkpoint on one side of its split: (per head N x K probabilities at temperature 1, the labels
    N x H, the schema)."""
    from attrfit.evaluation.scoring import score_checkpoint

    s = score_checkpoint(str(run), side=side, progress=False, decide="most-probable")
    return s.raw_probs, s.labels, s.schema


def median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def add_data_args(p) -> None:
    """The data options shared by the throughput and data benchmarks."""
    p.add_argument("--csv", type=Path, help="labels CSV (default: PETA peta_heads.csv)")
    p.add_argument("--images", help="folder the CSV's image paths are relative to (default: the CSV's folder)")
    p.add_argument("--group-column", default="person_id", help="group column for the split ('' for none)")
    p.add_argument("--size", help=f"HxW (default {PETA_SIZE}; --quick 64x32)")
