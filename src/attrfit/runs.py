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
import os
import platform
import time
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
