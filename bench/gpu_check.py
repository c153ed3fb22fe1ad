"""One script for a GPU machine: the machine, training throughput, --compile on and off, and the
reference-sized job (13,500 images, 8 heads, 50 epochs) timed end to end.

    python bench/gpu_check.py                # on the GPU machine, from the repo root: ~6 minutes, at most --budget-s
    python bench/gpu_check.py --cpu-smoke    # the same steps at a tiny size on the CPU (about a minute)

Steps, in order of what matters most if time runs out:

1. ``nvidia-smi`` and the Python side (torch, CUDA, cuDNN, the GPU, bf16);
2. the demo dataset (the real reference set's 8 heads and class frequencies, 13,500 images
   drawn at 64x64, attrfit's default size) and its split and image cache (``attrfit prepare``);
3. the reference-sized job: ``attrfit train`` on it, 50 epochs, ``--device cuda``, default
   precision, channels_last, ``--compile``, with the default preset; the goal is under 60 s;
4. ``bench/throughput.py --device cuda --preset gpu-base`` (PETA from ../shared/data/peta where
   present, else the demo data);
5. ``bench/step_speed.py``: training images/s of gpu-base with and without ``--compile``;
6. the reference-sized job again with ``--preset gpu-base``.

Each step runs in its own process group under a timeout (killed with SIGTERM, then SIGKILL), so a
hang costs that step only, and no step starts past the overall ``--budget-s``. Written to ``$OUT``
(default ./gpu_out): ``gpu_check.json`` (rewritten after every step, so a kill keeps what was done),
``gpu_check.log`` (each step's command, exit code and elapsed time), ``logs/NN-step.log`` (its whole
output), each benchmark's JSON, and each timed run's config, metrics and results. The sources are
used from this checkout (PYTHONPATH=src:bench): nothing needs installing. Bulky files (images,
cache, checkpoints) go to ``--workdir``, not to ``$OUT``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PETA_HEADS = REPO.parent / "shared" / "data" / "peta" / "peta_heads.csv"
GOAL_S = 60.0  # the reference-sized job, end to end
MIN_STEP_S = 15.0  # a step with less time than this left is skipped, not started
ENV_CODE = """
import importlib, json, torch
missing = []
for name in ("numpy", "PIL", "tqdm", "matplotlib", "attrfit"):  # attrfit's dependencies, and attrfit from src
    try:
        importlib.import_module(name)
    except Exception as e:
        missing.append(f"{name}: {e}")
try:
    from attrfit.core.runs import environment
except Exception:
    environment = lambda: {"torch": torch.__version__}
cuda = torch.cuda.is_available()
p = torch.cuda.get_device_properties(0) if cuda else None
try:
    import triton; triton_version = triton.__version__
except Exception:
    triton_version = None
print("ENV " + json.dumps({**environment(), "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
    "cuda_available": cuda, "gpu_count": torch.cuda.device_count(), "gpu": p.name if p else None,
    "gpu_memory_gib": round(p.total_memory / 2**30, 1) if p else None,
    "capability": list(torch.cuda.get_device_capability(0)) if cuda else None,
    "bf16": torch.cuda.is_bf16_supported() if cuda else None, "triton": triton_version, "missing": missing}))
"""
DEMO_CODE = """
import os, sys
from pathlib import Path
from attrfit.data.demo import CSV_NAME, make_demo
out, (n, h, w) = Path(sys.argv[1]), (int(v) for v in sys.argv[2:5])
if (out / CSV_NAME).is_file():  # a rerun keeps the images, so the image cache stays valid
    print("kept", out / CSV_NAME)
else:
    print(make_demo(out, n=n, size=(h, w), workers=os.cpu_count() or 1, force=True))
"""


# ---------------------------------------------------------------- the plan

@dataclass
class Settings:
    """What differs between the GPU run and the CPU smoke."""

    device: str = "cuda"
    n: int = 13_500
    size: str = "64x64"
    epochs: int = 50
    presets: tuple[str, ...] = ("cpu-small", "gpu-base")
    job_extra: tuple[str, ...] = ()  # extra train flags
    bench_quick: bool = False  # throughput.py/step_speed.py in their --quick mode (generated data, tiny)
    bench_preset: str = "gpu-base"
    threads: int = 0  # torch CPU threads of every step (0: torch's default)
    timeouts: dict = field(default_factory=lambda: {"nvidia-smi": 30, "env": 60, "demo-data": 120, "prepare": 120,
                                                    "job": 200, "throughput": 150, "compile": 200})


def smoke_settings() -> Settings:
    """Tiny, on the CPU, one thread (OpenMP threads spin and crawl on a busy shared machine). The
    jobs run eager in fp32 (compiling and the bf16 self-check cost a CPU half a minute each);
    --compile is exercised by the compile step."""
    return Settings(device="cpu", n=200, size="32x32", epochs=2, bench_quick=True, bench_preset="cpu-small",
                    job_extra=("--batch-size", "32", "--no-compile", "--precision", "fp32"), threads=1)


@dataclass
class Step:
    name: str
    argv: list[str]
    timeout_s: float
    collect: str = ""  # what to read back afterwards: "env", "job:<preset>", "bench:<file>"


def plan(s: Settings, out: Path, work: Path) -> list[Step]:
    """The steps, most important first (see the module docstring)."""
    py = sys.executable
    csv_path = work / "demo" / "annotations.csv"
    cache = ["--cache-dir", str(work / "cache")]
    steps = [Step("nvidia-smi", ["nvidia-smi"], s.timeouts["nvidia-smi"]),
             Step("env", [py, "-c", ENV_CODE], s.timeouts["env"], "env"),
             Step("demo-data", [py, "-c", DEMO_CODE, str(work / "demo"), str(s.n), *s.size.split("x")],
                  s.timeouts["demo-data"]),
             Step("prepare", [py, "-m", "attrfit", "prepare", str(csv_path), "--size", s.size, *cache],
                  s.timeouts["prepare"])]
    jobs = [job_step(s, p, csv_path, cache, work) for p in s.presets]
    steps.append(jobs[0])
    steps += bench_steps(s, out, csv_path)
    return steps + jobs[1:]


def job_step(s: Settings, preset: str, csv_path: Path, cache: list[str], work: Path) -> Step:
    run = work / "runs" / f"job-{preset}"
    argv = [sys.executable, "-m", "attrfit", "train", str(csv_path), "--device", s.device, "--epochs", str(s.epochs),
            "--preset", preset, "--channels-last", "--compile", "--size", s.size, *cache, "--run-dir", str(run),
            "--quiet", "--no-report", "--threads", str(s.threads), *s.job_extra]
    return Step(f"job-{preset}", argv, s.timeouts["job"], f"job:{preset}")


def bench_steps(s: Settings, out: Path, csv_path: Path) -> list[Step]:
    py, bench = sys.executable, REPO / "bench"
    if s.bench_quick:
        data = ["--quick"]
    elif PETA_HEADS.is_file():
        data = []  # the scripts' default: PETA peta_heads.csv at 128x64
    else:
        data = ["--csv", str(csv_path), "--size", s.size, "--group-column", ""]
    common = ["--device", s.device, "--preset", s.bench_preset, "--threads", str(s.threads), *data]
    return [Step("throughput", [py, str(bench / "throughput.py"), *common, "--out", str(out / "throughput.json")],
                 s.timeouts["throughput"], "bench:throughput.json"),
            Step("compile", [py, str(bench / "step_speed.py"), *common, "--variant", "eager=",
                             "--variant", "compile=compile=true", "--out", str(out / "step_speed.json")],
                 s.timeouts["compile"], "bench:step_speed.json")]


# ---------------------------------------------------------------- running a step

def child_env() -> dict:
    """The sources of this checkout first on the path; no progress bars in the logs."""
    paths = [str(REPO / "src"), str(REPO / "bench"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "ATTRFIT_PROGRESS": "0"}


def run_step(step: Step, timeout_s: float, log_file: Path) -> dict:
    """Run ``step`` in its own process group, output to ``log_file``; kill the group at ``timeout_s``."""
    t0 = time.perf_counter()
    with open(log_file, "w", encoding="utf-8") as f:
        f.write(f"$ {shlex.join(step.argv)}\n")
        f.flush()
        try:
            proc = subprocess.Popen(step.argv, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=child_env(),
                                    start_new_session=True)
        except OSError as e:  # e.g. no nvidia-smi on this machine
            f.write(f"could not start: {e}\n")
            return {"rc": None, "timed_out": False, "elapsed_s": time.perf_counter() - t0, "error": str(e)}
        timed_out = wait_or_kill(proc, timeout_s)
    return {"rc": proc.returncode, "timed_out": timed_out, "elapsed_s": time.perf_counter() - t0}


def wait_or_kill(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Wait for ``proc``; past ``timeout_s`` end its whole process group (TERM, then KILL). True if it was ended."""
    try:
        proc.wait(timeout=timeout_s)
        return False
    except subprocess.TimeoutExpired:
        pass
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
    return True


def tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError:
        return ""


# ---------------------------------------------------------------- reading results back

def collect(step: Step, log_file: Path, out: Path, work: Path) -> dict | None:
    kind, _, arg = step.collect.partition(":")
    if kind == "env":
        lines = [ln for ln in tail(log_file, 20_000).splitlines() if ln.startswith("ENV ")]
        return json.loads(lines[-1][4:]) if lines else None
    if kind == "job":
        return job_results(work / "runs" / f"job-{arg}", out / f"job-{arg}")
    if kind == "bench" and (out / arg).is_file():
        return bench_summary(json.loads((out / arg).read_text()))
    return None


def job_results(run: Path, keep: Path) -> dict | None:
    """A timed run's figures; its small files copied into ``keep`` (in $OUT)."""
    if not (run / "metrics.csv").is_file():
        return None
    keep.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "environment.json", "metrics.csv", "results.json", "train.log"):
        if (run / name).is_file():
            shutil.copy(run / name, keep / name)
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    seconds = [float(r["seconds"]) for r in rows]
    rest = sorted(seconds[1:])
    out = {"epochs_done": len(rows), "first_epoch_s": seconds[0] if seconds else None,
           "steady_epoch_s": rest[len(rest) // 2] if rest else None, "train_s": sum(seconds),
           "steady_images_per_s": float(rows[-1]["images_per_s"]) if rows else None,
           "val_mean_accuracy_last": float(rows[-1]["val_mean_accuracy"]) if rows else None}
    if (run / "results.json").is_file():
        r = json.loads((run / "results.json").read_text())
        out.update(test_mean_accuracy=r["mean"]["accuracy"], test_mean_majority=r["mean"]["majority_accuracy"],
                   best_epoch=r.get("best_epoch"))
    return out


def bench_summary(doc: dict) -> dict:
    r = doc.get("results") or {}
    if doc.get("benchmark") == "throughput":
        keys = ("median_attrfit_images_per_s", "median_handwritten_images_per_s", "median_ratio",
                "achieved_flops_per_s", "peak_bf16_matmul_flops_per_s", "fraction_of_bf16_peak")
        return {k: r.get(k) for k in keys}
    rates = doc.get("rates") or {}
    return {"median_images_per_s": {n: sorted(v)[len(v) // 2] for n, v in rates.items() if v},
            "build_s": doc.get("build_s"), "precision": doc.get("precision")}


# ---------------------------------------------------------------- main

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu-smoke", action="store_true", help="the same steps at a tiny size on the CPU")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu_out"),
                   help="results folder (default $OUT, else ./gpu_out)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="data, cache and runs (default $TMPDIR/attrfit-gpu-check[-smoke])")
    p.add_argument("--budget-s", type=float, default=None,
                   help="no step starts after this many seconds, and none runs past it (default 450; smoke 240)")
    p.add_argument("--presets", default=None, help="presets of the timed jobs, comma-separated (default "
                   "cpu-small,gpu-base)")
    p.add_argument("--only", default="", help="run only these steps (comma-separated names, e.g. env,job-gpu-base)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    s = smoke_settings() if args.cpu_smoke else Settings()
    if args.presets:
        s.presets = tuple(p for p in args.presets.split(",") if p)
    tmp = Path(os.environ.get("TMPDIR") or "/tmp")
    work = args.workdir or tmp / ("attrfit-gpu-check-smoke" if args.cpu_smoke else "attrfit-gpu-check")
    out = args.out.resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "runs", ignore_errors=True)  # run folders are never overwritten: start them afresh
    work.mkdir(parents=True, exist_ok=True)
    budget = args.budget_s or (240.0 if args.cpu_smoke else 450.0)
    steps = plan(s, out, work)
    if args.only:
        steps = [st for st in steps if st.name in args.only.split(",")]
    report = {"mode": "cpu-smoke" if args.cpu_smoke else "gpu", "budget_s": budget, "goal_s": GOAL_S,
              "settings": {k: v for k, v in vars(s).items() if k != "timeouts"}, "workdir": str(work),
              "peta": PETA_HEADS.is_file(), "steps": [], "results": {}}
    started = time.perf_counter()
    with open(out / "gpu_check.log", "w", encoding="utf-8") as log:
        for i, step in enumerate(steps):
            say(log, run_one(i, step, budget - (time.perf_counter() - started), out, work, report))
            write_json(out / "gpu_check.json", report)
        report["total_s"] = time.perf_counter() - started
        say(log, summary(report))
    write_json(out / "gpu_check.json", report)
    return 0


def run_one(i: int, step: Step, left_s: float, out: Path, work: Path, report: dict) -> str:
    """Run one step within what is left of the budget; record it in ``report``; return its log line."""
    log_file = out / "logs" / f"{i:02d}-{step.name}.log"
    if left_s < MIN_STEP_S:
        report["steps"].append({"name": step.name, "skipped": f"{left_s:.0f} s left of the budget"})
        return f"[{step.name}] skipped: {left_s:.0f} s left of the budget"
    timeout = min(step.timeout_s, left_s)
    rec = {"name": step.name, "command": shlex.join(step.argv) if step.name != "env" else "python -c ENV_CODE",
           "timeout_s": timeout, **run_step(step, timeout, log_file)}
    rec["output_tail"] = tail(log_file)
    report["steps"].append(rec)
    if step.collect:
        try:
            got = collect(step, log_file, out, work)
        except (OSError, ValueError, KeyError) as e:  # a half-written file: say so, go on with the next step
            got = {"error": f"{type(e).__name__}: {e}"}
        if got is not None:
            key = step.name
            if step.name.startswith("job-"):
                got = {"process_s": rec["elapsed_s"], "under_goal": rec["rc"] == 0 and rec["elapsed_s"] < GOAL_S,
                       **got}
            report["results"][key] = got
    state = "timed out" if rec["timed_out"] else f"rc {rec['rc']}"
    return f"[{step.name}] {state} in {rec['elapsed_s']:.1f} s (limit {timeout:.0f} s): {rec['command'][:300]}"


def summary(report: dict) -> str:
    lines = [f"total {report['total_s']:.0f} s of a {report['budget_s']:.0f} s budget"]
    for name, r in report["results"].items():
        lines.append(f"{name}: {json.dumps(r, default=str)[:600]}")
    return "\n".join(lines)


def say(log, text: str) -> None:
    print(text, flush=True)
    log.write(text + "\n")
    log.flush()


def write_json(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


if __name__ == "__main__":
    raise SystemExit(main())
