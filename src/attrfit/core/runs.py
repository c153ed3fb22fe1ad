"""Run folders: created once, never overwritten; what a run writes and where.

A run folder holds ``config.json`` (the resolved config), ``schema.json``, ``split_ref.json``
(the split file's path and fingerprint), ``metrics.csv`` (one row per epoch),
``last.pt``/``best.pt`` checkpoints, ``results.json`` (test metrics of the best
checkpoint), ``train.log`` and, when made, ``lr_find/`` and ``report.html``.
"""

from __future__ import annotations

import csv
import dataclasses
import fcntl
import itertools
import json
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from attrfit.core.version import __version__

from attrfit.core import files, outputs
from attrfit.core.errors import AttrfitError

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"  # held (flock) by the process training in a run folder; holds its PID


def new_run_dir(run_dir: str | Path | None, csv_path: str, config: dict | None = None) -> Path:
    """Create the run folder; refuse one that exists and is not empty, or a file.

    With ``config`` the folder gets its ``config.json`` at once, so a run killed at any
    moment after this (even before its first checkpoint) continues with ``--resume``.
    """
    run = claim_default_run_dir(csv_path) if run_dir is None else check_new_run_dir(run_dir)
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


def claim_default_run_dir(csv_path: str) -> Path:
    """Make ``runs/<time>-<csv stem>[-k]`` with a plain mkdir, which only one process can win:
    two runs started in the same second get two folders."""
    base = Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{Path(csv_path).stem}"
    files.make_folder(base.parent, "runs folder")
    for k in itertools.count(1):
        run = base if k == 1 else base.with_name(f"{base.name}-{k}")
        try:
            run.mkdir()
            return run
        except FileExistsError:
            continue
        except OSError as e:
            raise AttrfitError(f"cannot write to the run folder {run}: {e.strerror or e}") from None


def check_new_run_dir(run_dir: str | Path) -> Path:
    """Refuse a ``--run-dir`` that is a file or a folder with contents (called before the data is loaded)."""
    run = outputs.check_output_folder(run_dir, "run folder", "--run-dir")
    blocker = files.blocker(run)
    if blocker == run:
        raise AttrfitError(f"--run-dir {run} is a file, not a folder; choose a new folder name")
    if blocker is not None:
        raise AttrfitError(f"--run-dir {run}: {blocker} is a file, not a folder; choose another place")
    if run.is_dir() and any(p.name not in (LOCK_NAME, ".write-test") for p in run.iterdir()):
        raise AttrfitError(
            f"run folder {run} already exists and is not empty; a run is never overwritten. "
            f"Continue it with 'attrfit train --resume {run}' or choose another --run-dir"
        )
    existing = next(p for p in [run, *run.parents] if p.exists())
    reason = files.cannot_create_in(existing)
    if reason:
        raise AttrfitError(f"cannot write to the run folder {run}: {reason}")
    return run


class RunLock:
    """An exclusive ``flock`` on ``RUN/.lock`` while a process trains in the run folder.

    Non-blocking: a second ``train --resume RUN`` fails at once, naming the PID that holds
    the run. The kernel drops the lock when its process dies (even by SIGKILL), so a stale
    ``.lock`` file never blocks anything.
    """

    def __init__(self, run: Path) -> None:
        self.run = Path(run)
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        path = self.run / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as e:
            raise AttrfitError(f"cannot write to the run folder {self.run}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise AttrfitError(
                f"the run {self.run} is in use by another attrfit process (PID {holder}); wait for it to end "
                "or stop it, then try again"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc) -> None:
        self.release()


def is_training(run: Path) -> bool:
    """Whether a process holds ``run``'s lock now, i.e. is training in it (the kernel drops a dead one's)."""
    try:
        fd = os.open(Path(run) / LOCK_NAME, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False  # no lock file: nothing ever trained here, or not with this attrfit
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing drops the shared lock taken to look
    return False


def _read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode().strip() or "unknown"
    except (OSError, UnicodeDecodeError):
        return "unknown"


def lock_run(run: Path) -> RunLock:
    """Lock ``run`` for this process (see :class:`RunLock`); release with ``.release()`` or ``with``."""
    return RunLock(run).acquire()


def with_absolute_paths(cfg):
    """``cfg`` (a TrainConfig) with its data paths absolute, as typed otherwise (symlinks kept)."""
    def absolute(p: str | None) -> str | None:
        return os.path.abspath(p) if p else p

    d = cfg.data
    data = dataclasses.replace(d, csv=absolute(d.csv), images=absolute(d.images), split=absolute(d.split),
                               cache_dir=absolute(d.cache_dir))
    return dataclasses.replace(cfg, data=data, init_from=absolute(cfg.init_from))


def check_recorded_paths(data, where: Path | str, fix: str) -> None:
    """Say which data path recorded in ``where`` (config.json, a checkpoint) is missing, and how to fix it.

    Runs made before paths were stored absolute hold them as typed, relative to the folder
    the run was started from.
    """
    for label, value, exists in (("labels CSV", data.csv, os.path.isfile), ("image folder", data.images, os.path.isdir),
                                 ("split file", data.split, os.path.isfile)):
        if value and not exists(value):
            rel = "" if os.path.isabs(value) else f", a relative path looked up from {os.getcwd()}"
            raise AttrfitError(
                f"the {label} {value} recorded in {where} is not there{rel}; run from the folder the run was "
                f"started in, move the data back, {fix}"
            )


FAILED = "failed.json"  # why a run stopped with an error: written when it fails, removed when it goes on


@dataclass(frozen=True)
class Failure:
    """What ``RUN/failed.json`` records of a run that stopped with an error."""

    kind: str  # "diverged" (resuming repeats it) | "error"
    message: str
    epoch: int  # completed epochs when it failed
    step: int
    checkpoint: bool  # whether last.pt holds weights to go on from

    @classmethod
    def read(cls, run: Path) -> Failure | None:
        path = Path(run) / FAILED
        if not path.is_file():
            return None
        d = read_json(path)
        return cls(str(d.get("kind", "error")), str(d.get("message", "")), int(d.get("epoch", 0)),
                   int(d.get("step", 0)), bool(d.get("checkpoint", False)))

    def write(self, run: Path) -> None:
        """Best effort: a run that failed because its disk is full cannot record it, and says so in the log."""
        try:
            write_json(Path(run) / FAILED, {**dataclasses.asdict(self), "time": time.strftime("%Y-%m-%d %H:%M:%S")})
        except AttrfitError as e:
            log.warning("could not record the failure in %s: %s", run, e)

    @staticmethod
    def clear(run: Path) -> None:
        (Path(run) / FAILED).unlink(missing_ok=True)


def write_json(path: Path, obj) -> None:
    """Atomic JSON write (see :mod:`attrfit.core.files`)."""
    files.write_json(path, obj)


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
        hint = "the previous checkpoint is untouched (free disk space, then --resume)"
        with files.atomic_open(self.path, text=True, hint=hint, newline="", encoding="utf-8") as f:
            if rows:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


class RunLogHandler(logging.FileHandler):
    """``train.log``. When it cannot be written (a full disk) it says so once and steps aside, rather than
    printing a traceback for every line; the log goes on on the screen, and the run reports the disk itself."""

    def handleError(self, record: logging.LogRecord) -> None:
        logger = logging.getLogger("attrfit")
        if self in logger.handlers:
            logger.removeHandler(self)
            log.warning("cannot write %s any more (%s); logging to the screen only", self.baseFilename,
                        sys.exc_info()[1])

    def close(self) -> None:
        try:
            super().close()
        except OSError:
            pass  # the unwritten lines were already reported by handleError


def add_file_log(run: Path) -> logging.Handler:
    handler = RunLogHandler(run / "train.log", encoding="utf-8", errors="backslashreplace")  # names need not be UTF-8
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger("attrfit").addHandler(handler)
    return handler
