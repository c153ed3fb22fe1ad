"""``attrfit runs``: what each run folder holds and how far it got, read from what is on disk.

A run is *running* only while a process holds its lock (:func:`attrfit.core.runs.is_training`),
*finished* when it has results.json and best.pt, *failed* when failed.json says why,
*stopped* otherwise (Ctrl-C, a kill), and *broken* when its files cannot be read or best.pt is gone.
Listing never loads a checkpoint and never raises for a damaged folder.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from attrfit.core.errors import AttrfitError
from attrfit.core.formatting import number
from attrfit.core.runs import Failure, MetricsLog, is_training


@dataclass
class RunSummary:
    """One line of ``attrfit runs``: what a run folder holds, read without loading checkpoints."""

    path: str
    started: str | None  # local time the run folder got its config.json
    csv: str | None
    settings: str | None
    state: str  # running | finished | stopped | failed | broken
    detail: str  # in words, e.g. "stopped at epoch 3 of 12; resume with ..."
    epochs_done: int | None = None
    epochs: int | None = None
    best_val: float | None = None  # the best val value of the run's monitor (mean accuracy or balanced)
    monitor: str = "mean_accuracy"
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
    s.monitor = str(config.get("monitor") or "mean_accuracy")
    column = f"val_{s.monitor}"
    scored = [r for r in rows if math.isfinite(_float(r.get(column)))]
    if scored:  # the first epoch of the best value, as the trainer picks best.pt
        best = max(scored, key=lambda r: (_float(r[column]), -float(r["epoch"])))
        s.best_val, s.best_epoch = _float(best[column]), int(float(best["epoch"]))
    s.state, s.detail = _state(run, done, epochs, s)
    return s


def _state(run: Path, done: int, epochs: int | None, s: RunSummary) -> tuple[str, str]:
    """(state, detail) from what is on disk: the lock, results.json and best.pt, failed.json, checkpoints."""
    if is_training(run):
        return "running", f"training now, at epoch {done} of {epochs}"
    results = run / "results.json"
    if results.is_file():
        res = json.loads(results.read_text(encoding="utf-8"))
        s.test_mean_accuracy = res["mean"]["accuracy"]
        s.test_mean_balanced_accuracy = res["mean"]["balanced_accuracy"]
        if not (run / "best.pt").is_file():
            return "broken", ("best.pt is missing (deleted or moved?): the test scores are those results.json "
                              "recorded, but evaluate, report, predict and export need best.pt")
        return "finished", f"finished {done} of {epochs} epochs"
    failure = Failure.read(run)
    if failure is not None:
        return "failed", _failure_detail(run, failure)
    has_ckpt = any((run / n).is_file() for n in ("last.pt", "last.prev.pt"))
    if has_ckpt and done >= (epochs or 0):
        return "stopped", (f"trained {done} of {epochs} epochs but has no results.json (stopped while scoring the "
                           f"test side); finish it with: attrfit train --resume {run}")
    if has_ckpt:
        return "stopped", f"stopped at epoch {done} of {epochs}; resume with: attrfit train --resume {run}"
    return "stopped", f"stopped before its first checkpoint; start it again with: attrfit train --resume {run}"


def _failure_detail(run: Path, f: Failure) -> str:
    where = f"failed in epoch {f.epoch + 1} (step {f.step}): {f.message.splitlines()[0] if f.message else '?'}"
    if f.kind == "diverged":
        return where + "; resuming repeats it: start a new run with the change it names"
    return where + f"; once the cause is fixed, go on with: attrfit train --resume {run}"


def key_settings(config: dict) -> str:
    """The settings that tell runs apart at a glance."""
    data, optim, aug = config.get("data", {}), config.get("optim", {}), config.get("augment", {})
    parts = [str(data.get("size")), f"{config.get('epochs')} ep", f"lr {optim.get('lr')}",
             str(config.get("schedule", {}).get("kind")), f"bs {config.get('batch_size')}",
             str(config.get("model", {}).get("preset"))]
    if aug.get("cutout"):
        parts.append(f"cutout {aug['cutout']}")
    return " ".join(parts)


MONITOR_WORDS = {"mean_accuracy": "mean accuracy", "mean_balanced_accuracy": "mean balanced accuracy"}


def format_runs(found: list[RunSummary]) -> str:
    if not found:
        return "no run folders"
    lines = [f"{'started':<16}  {'state':<8}  {'best val':>8}  {'test acc':>8}  {'bal acc':>7}  run / data / settings"]
    for r in found:
        lines.append(f"{r.started or '?':<16}  {r.state:<8}  {_score(r.best_val):>8}  "
                     f"{_score(r.test_mean_accuracy):>8}  {_score(r.test_mean_balanced_accuracy):>7}  {r.path}")
        what = "; ".join(x for x in (r.csv, r.settings, f"best val = {MONITOR_WORDS.get(r.monitor, r.monitor)}") if x)
        lines.append(f"{'':<48}{what + '; ' if what else ''}{r.detail}")
    return "\n".join(lines)


def _score(x) -> str:
    return number(x, missing="-")


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
