"""Kill-and-resume soak: SIGKILL a real training run at random moments, resume it, compare.

    python bench/soak.py [--kills 20] [--seed 0] [--quick] [--epochs N] [--keep DIR] [-v]

Makes a tiny dataset in a temp folder, trains it once without interruption (the
reference), then trains it again as separate ``attrfit train`` processes, each killed
with SIGKILL at a seeded random moment and continued with ``attrfit train --resume``,
until ``--kills`` kills have landed; the last resume runs to the end. After every kill
the run folder must hold only whole files (every visible checkpoint passes its checksum,
metrics.csv has consecutive epochs); at the end the final weights (model, EMA, optimizer
of last.pt; best.pt) must equal the reference's bit for bit, and metrics.csv and
results.json must match except for timings. Prints one summary line; exits 1 on any
mismatch. ``--quick`` (3 kills, a shorter run) is what tests/guarantees/test_reliability.py runs.

A kill lands in one of three ways (20% / 50% / 30% of the kills, in a seeded order):

- ``any``: at a random time from process start up to the reference's first checkpoint
  (imports, data loading, run folder creation, first steps),
- ``training``: a random time after this process wrote its first checkpoint (mid-epoch
  or during validation), sized so the kills spread over what is left of the run,
- ``write``: likewise, then the moment a checkpoint temp file appears (inside a write).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from attrfit.model import checkpoint

TIMING_COLUMNS = {"seconds", "wall_s", "images_per_s"}  # metrics.csv columns that differ between any two runs
TIMING_KEYS = {"wall_time_s", "images_per_s"}  # same, in results.json
KILL_MODES = (("any", 0.2), ("training", 0.5), ("write", 0.3))  # (mode, share of the kills)


# ---------------------------------------------------------------- data and commands

def make_data(root: Path, n: int = 192, seed: int = 0) -> Path:
    """n 20x20 PNGs: head 'color' is the dominant channel, 'bright' the brightness. Returns the CSV."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    lines = ["image_path,color,bright"]
    for i in range(n):
        c, bright = i % 3, (i // 3) % 2
        a = rng.integers(0, 60, (20, 20, 3)).astype(np.uint8)
        a[..., c] += 120 + 60 * bright
        Image.fromarray(a).save(root / "img" / f"{i}.png")
        lines.append(f"img/{i}.png,{('red', 'green', 'blue')[c]},{('dark', 'light')[bright]}")
    path = root / "labels.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def train_args(epochs: int) -> list[str]:
    """A tiny CPU run with EMA, mid-epoch checkpoints every 2 steps and a fixed seed."""
    return ["--size", "32x32", "--width", "16", "--stages", "2", "--epochs", str(epochs), "--batch-size", "8",
            "--lr", "0.05", "--ema", "0.9", "--seed", "1", "--precision", "fp32", "--device", "cpu",
            "--threads", "1", "--checkpoint-every", "2", "--val-fraction", "0.25", "--eval-batch-size", "4",
            "--no-report", "--quiet"]


def train_cmd(csv_path: Path, run: Path, epochs: int) -> list[str]:
    return [sys.executable, "-m", "attrfit", "train", str(csv_path), "--run-dir", str(run), *train_args(epochs)]


def resume_cmd(run: Path) -> list[str]:
    return [sys.executable, "-m", "attrfit", "train", "--resume", str(run), "--quiet"]


def child_env(cache_dir: Path) -> dict:
    return {**os.environ, "ATTRFIT_CACHE_DIR": str(cache_dir), "ATTRFIT_PROGRESS": "0"}


# ---------------------------------------------------------------- watching a run folder

def checkpoint_temps(run: Path) -> list[Path]:
    """Temp files of checkpoint writes in progress (or left by a kill)."""
    return sorted(run.glob(".*.pt.tmp*")) if run.is_dir() else []


def mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def wait_for(proc: subprocess.Popen, ready, timeout: float, poll: float = 0.001) -> bool:
    """Poll ``ready()`` until true (True) or the process ends or time runs out (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ready():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    return False


def steps_done(run: Path) -> int:
    """The step a resume would start from (what --resume loads: last.pt, else last.prev.pt)."""
    for p in (run / "last.pt", run / "last.prev.pt"):
        try:
            return int(checkpoint.load(p)["progress"]["step"])
        except Exception:
            continue
    return 0


# ---------------------------------------------------------------- invariants and comparison

def check_after_kill(run: Path) -> list[str]:
    """What a kill must never leave behind: a damaged visible file or a gap in metrics.csv."""
    problems = []
    if not run.is_dir():
        return problems
    for p in sorted(run.glob("*.pt")):
        try:
            checkpoint.load(p)
        except Exception as e:
            problems.append(f"{p.name} is damaged: {e}")
    for p in sorted(run.glob("*.json")):
        try:
            json.loads(p.read_text())
        except ValueError as e:
            problems.append(f"{p.name} is not valid JSON: {e}")
    if (run / "metrics.csv").is_file():
        with open(run / "metrics.csv", newline="") as f:
            epochs = [int(r["epoch"]) for r in csv.DictReader(f)]
        if epochs != list(range(1, len(epochs) + 1)):
            problems.append(f"metrics.csv epochs are {epochs}")
    if (run / "results.json").is_file() and not (run / "last.pt").is_file():
        problems.append("results.json without last.pt")
    return problems


def same_tensors(a, b, where: str) -> list[str]:
    """Differences between two nested dict/list structures of tensors and plain values."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        ok = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
        return [] if ok else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{where} keys"]
        return [d for k in a for d in same_tensors(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where} length"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in same_tensors(x, y, f"{where}[{i}]")]
    return [] if a == b else [where]


def metrics_rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in csv.DictReader(f)]


def metrics_differences(a: list[dict], b: list[dict], loss_rel_tol: float) -> list[str]:
    """Cells that differ as written; with ``loss_rel_tol`` the train_loss columns may differ by that relative amount."""
    if [list(r) for r in a] != [list(r) for r in b]:
        return [f"metrics.csv rows/columns differ ({len(a)} vs {len(b)} rows)"]
    out = []
    for ra, rb in zip(a, b):
        for k in ra:
            if ra[k] != rb[k] and not (loss_rel_tol and k.startswith("train_loss")
                                       and abs(float(ra[k]) - float(rb[k])) <= loss_rel_tol * abs(float(ra[k]))):
                out.append(f"metrics.csv epoch {ra['epoch']} {k}: {ra[k]} vs {rb[k]}")
    return out


def compare_runs(ref: Path, run: Path, loss_rel_tol: float = 0.0) -> list[str]:
    """Everything that must be identical between an interrupted run and the reference.

    A SIGKILLed run resumes from checkpoints only, so even its float32 running loss sums
    are added up in the same groups as the reference's: compare with ``loss_rel_tol=0``.
    A Ctrl-C stop checkpoints at any step, which regroups those sums (the weights are
    still bit-identical): pass a tolerance of about 1e-5 for the printed train losses.
    """
    diffs = []
    a, b = checkpoint.load(ref / "last.pt"), checkpoint.load(run / "last.pt")
    for key in ("model", "ema", "optimizer"):
        diffs += same_tensors(a[key], b[key], f"last.pt {key}")
    for key in ("epoch", "step", "best_epoch", "best_value"):
        if a["progress"][key] != b["progress"][key]:
            diffs.append(f"last.pt progress.{key}: {a['progress'][key]} vs {b['progress'][key]}")
    diffs += same_tensors(checkpoint.load(ref / "best.pt")["model"], checkpoint.load(run / "best.pt")["model"],
                          "best.pt model")
    diffs += metrics_differences(metrics_rows(ref), metrics_rows(run), loss_rel_tol)
    ja, jb = (json.loads((r / "results.json").read_text()) for r in (ref, run))
    if {k: v for k, v in ja.items() if k not in TIMING_KEYS} != {k: v for k, v in jb.items() if k not in TIMING_KEYS}:
        diffs.append("results.json differs")
    return diffs


# ---------------------------------------------------------------- the soak

@dataclass
class Soak:
    csv_path: Path
    work: Path
    epochs: int
    rng: random.Random
    startup_s: float  # seconds from process start to the first checkpoint, in the reference
    step_s: float  # seconds per training step in the reference (checkpoint writes included)
    total_steps: int
    kills: list[dict] = field(default_factory=list)
    processes: int = 0

    def start(self, cmd: list[str], log: Path) -> subprocess.Popen:
        self.processes += 1
        with open(log, "wb") as f:
            return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=child_env(self.work / "cache"))

    def next_command(self, run: Path) -> list[str]:
        """Resume when the run folder says what the run is; start afresh when the kill came before that."""
        if (run / "config.json").is_file():
            return resume_cmd(run)
        if run.exists() and any(run.iterdir()):
            raise SystemExit(f"soak: FAIL: {run} is neither resumable (no config.json) nor empty: "
                             f"{sorted(p.name for p in run.iterdir())}")
        return train_cmd(self.csv_path, run, self.epochs)

    def kill_once(self, run: Path, mode: str, kills_left: int) -> str | None:
        """Start the next process and kill it the ``mode`` way; return the mode, or None if it finished first."""
        window = max(1, self.total_steps - steps_done(run)) * self.step_s / kills_left  # half a share on average
        before = mtime(run / "last.pt")
        proc = self.start(self.next_command(run), self.work / f"segment{self.processes + 1}.log")
        if mode == "any":  # a resume starts faster than the reference did: stop waiting once it trains
            if wait_for(proc, lambda: mtime(run / "last.pt") != before, self.rng.uniform(0, self.startup_s)):
                wait_for(proc, lambda: False, self.rng.uniform(0, window))
        else:
            wait_for(proc, lambda: mtime(run / "last.pt") != before, 120)  # this process is training
            wait_for(proc, lambda: False, self.rng.uniform(0, window))
            if mode == "write":
                wait_for(proc, lambda: bool(checkpoint_temps(run)), 60, poll=0.0002)
        if proc.poll() is not None:
            self.finished(proc)
            return None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        problems = check_after_kill(run)
        if problems:
            raise SystemExit(f"soak: FAIL after kill {len(self.kills) + 1}: {'; '.join(problems)}")
        mid_write = any(f".tmp{proc.pid}-" in t.name for t in checkpoint_temps(run))  # .NAME.tmpPID-N
        between_renames = (run / "last.prev.pt").is_file() and not (run / "last.pt").is_file()
        self.kills.append({"mode": mode, "mid_write": mid_write or between_renames, "step": steps_done(run)})
        return mode

    def finished(self, proc: subprocess.Popen, log: Path | None = None) -> None:
        """A process that ended by itself must have succeeded."""
        if proc.returncode != 0:
            text = (log or self.work / f"segment{self.processes}.log").read_text(errors="replace")
            raise SystemExit(f"soak: FAIL: a segment exited {proc.returncode}:\n{text[-2000:]}")


def kill_modes(kills: int, rng: random.Random) -> list[str]:
    """Each mode's share of the kills (at least one each when there are enough), in a seeded random order."""
    counts = {m: max(1, round(share * kills)) if kills >= len(KILL_MODES) else 0 for m, share in KILL_MODES}
    counts["training"] = kills - counts["any"] - counts["write"] if kills >= len(KILL_MODES) else kills
    modes = [m for m, n in counts.items() for _ in range(n)]
    rng.shuffle(modes)
    return modes


def reference(csv_path: Path, work: Path, epochs: int) -> tuple[Path, float, float, int, float]:
    """The uninterrupted run; returns (run, seconds to its first checkpoint, seconds per step, steps, wall seconds)."""
    run = work / "reference"
    t0 = time.time()
    with open(work / "reference.log", "wb") as f:
        proc = subprocess.Popen(train_cmd(csv_path, run, epochs), stdout=f, stderr=subprocess.STDOUT,
                                env=child_env(work / "cache"))
    wait_for(proc, lambda: (run / "last.pt").is_file(), 600, poll=0.005)
    first = time.time()
    if proc.wait() != 0:
        raise SystemExit(f"soak: FAIL: the reference run failed:\n{(work / 'reference.log').read_text()[-2000:]}")
    wall = time.time() - t0
    steps = steps_done(run)
    step_s = max(1e-3, (mtime(run / "last.pt") - first) / max(1, steps - 2))  # the first checkpoint is at step 2
    return run, first - t0, step_s, steps, wall


def soak(kills: int, seed: int, epochs: int, work: Path) -> dict:
    csv_path = make_data(work / "data")
    t0 = time.monotonic()
    ref, startup_s, step_s, total, ref_wall = reference(csv_path, work, epochs)
    s = Soak(csv_path, work, epochs, random.Random(seed), startup_s, step_s, total)
    run = work / "killed"
    for i, mode in enumerate(kill_modes(kills, s.rng)):
        if s.kill_once(run, mode, kills - i) is None:
            break  # the run finished before the kill landed
    proc = s.start(s.next_command(run), work / "final.log")
    proc.wait()
    s.finished(proc, work / "final.log")
    diffs = compare_runs(ref, run)
    return {"kills": len(s.kills), "asked": kills, "processes": s.processes, "total_steps": total,
            "modes": {m: sum(k["mode"] == m for k in s.kills) for m, _ in KILL_MODES},
            "mid_write": sum(k["mid_write"] for k in s.kills), "diffs": diffs, "each": s.kills,
            "reference_s": round(ref_wall, 1), "wall_s": round(time.monotonic() - t0, 1)}


def summary_line(r: dict) -> str:
    verdict = "IDENTICAL" if not r["diffs"] and r["kills"] == r["asked"] else "FAIL"
    m = r["modes"]
    return (f"soak: {verdict}: {r['kills']}/{r['asked']} SIGKILLs ({m['any']} at any time, {m['training']} while "
            f"training/evaluating, {m['write']} aimed at a checkpoint write; {r['mid_write']} landed inside one), "
            f"{r['processes']} processes, {r['total_steps']} steps; final weights, metrics.csv and "
            f"results.json vs the uninterrupted run: {'bit-identical' if not r['diffs'] else r['diffs']}; "
            f"reference {r['reference_s']} s, soak total {r['wall_s']} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kills", type=int, default=None, help="SIGKILLs to land (default 20; 3 with --quick)")
    p.add_argument("--seed", type=int, default=0, help="seeds the kill moments and modes")
    p.add_argument("--quick", action="store_true", help="3 kills on a 6-epoch run (well under a minute)")
    p.add_argument("--epochs", type=int, help="length of the run (default: about 25 steps per kill)")
    p.add_argument("--keep", help="work in this folder and keep it (default: a temp folder, removed)")
    p.add_argument("-v", "--verbose", action="store_true", help="also print one line per kill")
    args = p.parse_args(argv)
    kills = args.kills if args.kills is not None else 3 if args.quick else 20
    # ~25 steps per kill (14 steps an epoch), so the kills land all through the run
    epochs = args.epochs or max(4, -(-25 * kills // 14))
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="attrfit-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        r = soak(kills, args.seed, epochs, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.verbose:
        for i, k in enumerate(r["each"], 1):
            print(f"kill {i:2d}: {k['mode']:<8} {'inside a checkpoint write' if k['mid_write'] else '':<25} "
                  f"resumable from step {k['step']}")
    print(summary_line(r))
    return 0 if not r["diffs"] and r["kills"] == r["asked"] else 1


if __name__ == "__main__":
    sys.exit(main())
