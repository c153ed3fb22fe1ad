"""Run folders: created once, never overwritten; what a run writes and where.

A run folder holds ``config.json`` (the resolved config), ``schema.json``, ``split_ref.json``
(the split file's path and fingerprint), ``metrics.csv`` (one row per epoch),
``last.pt``/``best.pt`` checkpoints, ``results.json`` (test metrics of the best
checkpoint), ``train.log`` and, when made, ``lr_find/`` and ``report.html``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from attrfit import __version__
from attrfit.errors import AttrfitError

log = logging.getLogger(__name__)


def new_run_dir(run_dir: str | Path | None, csv_path: str, config: dict | None = None) -> Path:
    """Create the run folder; refuse one that exists and is not empty.

    With ``config`` the folder gets its ``config.json`` at once, so a run killed at any
    moment after this (even before its first checkpoint) continues with ``--resume``.
    """
    if run_dir is None:
        base = Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{Path(csv_path).stem}"
        run = base
        k = 1
        while run.exists():
            k += 1
            run = base.with_name(f"{base.name}-{k}")
    else:
        run = Path(run_dir)
        if run.exists() and any(run.iterdir()):
            raise AttrfitError(
                f"run folder {run} already exists and is not empty; a run is never overwritten. "
                f"Continue it with 'attrfit train --resume {run}' or choose another --run-dir"
            )
    try:
        run.mkdir(parents=True, exist_ok=True)
        probe = run / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise AttrfitError(f"cannot write to the run folder {run}: {e.strerror or e}") from None
    if config is not None:
        write_json(run / "config.json", config)
    return run


def write_json(path: Path, obj) -> None:
    """Atomic JSON write (temp file then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise AttrfitError(f"cannot write {path}: {e.strerror or e}") from None


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AttrfitError(f"{path}: missing; is this an attrfit run folder?") from None
    except ValueError as e:
        raise AttrfitError(f"{path}: not valid JSON ({e})") from None


def environment() -> dict:
    """Code version and hardware, recorded in every run."""
    env = {
        "attrfit": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                env["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return env


class MetricsLog:
    """``metrics.csv``: one row per epoch; columns fixed by the first row."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def rows(self) -> list[dict]:
        if not self.path.is_file():
            return []
        with open(self.path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    def truncate_after(self, epoch: int) -> None:
        """Drop rows of epochs after ``epoch`` (work lost by a kill, redone on resume)."""
        rows = [r for r in self.rows() if int(r["epoch"]) <= epoch]
        self._write(rows)

    def append(self, row: dict) -> None:
        rows = self.rows()
        rows.append({k: _fmt(v) for k, v in row.items()})
        self._write(rows)

    def _write(self, rows: list[dict]) -> None:
        tmp = self.path.with_name(".metrics.csv.tmp")
        try:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                if rows:
                    w = csv.DictWriter(f, fieldnames=list(rows[0]))
                    w.writeheader()
                    w.writerows(rows)
            os.replace(tmp, self.path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise AttrfitError(f"cannot write {self.path}: {e.strerror or e}; the previous checkpoint is "
                               "untouched (free disk space, then --resume)") from None


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def add_file_log(run: Path) -> logging.Handler:
    handler = logging.FileHandler(run / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger("attrfit").addHandler(handler)
    return handler


# ---------------------------------------------------------------- listing run folders (attrfit runs)

RECENT_S = 300  # a run folder written to within this many seconds may still be training


@dataclass
class RunSummary:
    """One line of ``attrfit runs``: what a run folder holds, read without loading checkpoints."""

    path: str
    started: str | None  # local time the run folder got its config.json
    csv: str | None
    settings: str | None
    state: str  # finished | stopped | running | failed | broken
    detail: str  # in words, e.g. "stopped at epoch 3 of 12; resume with ..."
    epochs_done: int | None = None
    epochs: int | None = None
    best_val_mean_accuracy: float | None = None
    best_epoch: int | None = None
    test_mean_accuracy: float | None = None
    test_mean_balanced_accuracy: float | None = None
    sort_key: float = 0.0


def list_runs(folder: str | Path) -> list[RunSummary]:
    """Every run folder in ``folder`` (or ``folder`` itself when it is one), oldest first.

    A half-written or broken folder is listed with what is wrong, never raised.

    >>> [r.state for r in list_runs("runs")]  # doctest: +SKIP
    ['finished', 'stopped', 'broken']
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AttrfitError(f"{folder}: no such folder; give the folder your runs are in (train writes to ./runs "
                           "by default, the demo to demo/runs)")
    if (folder / "config.json").exists():
        candidates = [folder]
    else:
        candidates = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted((summarize_run(p) for p in candidates), key=lambda r: (r.sort_key, r.path))


def summarize_run(run: Path) -> RunSummary:
    """What one run folder holds and how far it got (see :class:`RunSummary`)."""
    try:
        config = json.loads((run / "config.json").read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        reason = "no config.json" if isinstance(e, FileNotFoundError) else f"unreadable config.json ({e})"
        return RunSummary(str(run), _mtime_text(run), None, None, "broken",
                          f"{reason}: not an attrfit run folder, or one killed before it started", sort_key=_mtime(run))
    try:
        return _summarize(run, config)
    except (OSError, ValueError, KeyError, TypeError, AttrfitError) as e:
        return RunSummary(str(run), _mtime_text(run / "config.json"), None, None, "broken",
                          f"half-written or damaged ({type(e).__name__}: {e})", sort_key=_mtime(run / "config.json"))


def _summarize(run: Path, config: dict) -> RunSummary:
    rows = MetricsLog(run / "metrics.csv").rows()
    epochs = int(config.get("epochs", 0)) or None
    done = int(float(rows[-1]["epoch"])) if rows else 0
    s = RunSummary(str(run), _mtime_text(run / "config.json"), Path(str(config.get("data", {}).get("csv"))).name,
                   key_settings(config), "", "", done, epochs, sort_key=_mtime(run / "config.json"))
    scored = [r for r in rows if math.isfinite(_float(r.get("val_mean_accuracy")))]
    if scored:
        best = max(scored, key=lambda r: _float(r["val_mean_accuracy"]))
        s.best_val_mean_accuracy, s.best_epoch = _float(best.get("val_mean_accuracy")), int(float(best["epoch"]))
    results = run / "results.json"
    if results.is_file():
        res = json.loads(results.read_text(encoding="utf-8"))
        s.test_mean_accuracy = res["mean"]["accuracy"]
        s.test_mean_balanced_accuracy = res["mean"]["balanced_accuracy"]
        s.state, s.detail = "finished", f"finished {done} of {epochs} epochs"
        return s
    has_ckpt = any((run / n).is_file() for n in ("last.pt", "last.prev.pt"))
    age = time.time() - max(_mtime(p) for p in [run, *run.iterdir()])
    if age < RECENT_S:
        s.state, s.detail = "running", f"at epoch {done} of {epochs}, written {age:.0f} s ago (or stopped just now)"
    elif has_ckpt and done >= (epochs or 0):
        s.state, s.detail = "failed", (f"trained {done} of {epochs} epochs but has no results.json (stopped while "
                                       f"scoring the test side); finish it with: attrfit train --resume {run}")
    elif has_ckpt:
        s.state, s.detail = "stopped", f"stopped at epoch {done} of {epochs}; resume with: attrfit train --resume {run}"
    else:
        s.state, s.detail = "failed", f"failed before its first checkpoint; start it again with: attrfit train --resume {run}"
    return s


def key_settings(config: dict) -> str:
    """The settings that tell runs apart at a glance."""
    data, optim, aug = config.get("data", {}), config.get("optim", {}), config.get("augment", {})
    parts = [str(data.get("size")), f"{config.get('epochs')} ep", f"lr {optim.get('lr')}",
             str(config.get("schedule", {}).get("kind")), f"bs {config.get('batch_size')}",
             str(config.get("model", {}).get("preset"))]
    if aug.get("cutout"):
        parts.append(f"cutout {aug['cutout']}")
    return " ".join(parts)


def format_runs(found: list[RunSummary]) -> str:
    if not found:
        return "no run folders"
    lines = [f"{'started':<16}  {'state':<8}  {'best val':>8}  {'test acc':>8}  {'bal acc':>7}  run / data / settings"]
    for r in found:
        lines.append(f"{r.started or '?':<16}  {r.state:<8}  {_fmt3(r.best_val_mean_accuracy):>8}  "
                     f"{_fmt3(r.test_mean_accuracy):>8}  {_fmt3(r.test_mean_balanced_accuracy):>7}  {r.path}")
        what = "; ".join(x for x in (r.csv, r.settings) if x)
        lines.append(f"{'':<48}{what + '; ' if what else ''}{r.detail}")
    return "\n".join(lines)


def _fmt3(x) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.3f}"


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


def _mtime_text(p: Path) -> str | None:
    t = _mtime(p)
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else None
