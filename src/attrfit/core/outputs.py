"""Where a command may write: the one policy for every output a user names.

Every output option of every command (``--out``, ``--html``, a folder to write into) is checked
here, before the work starts. An output:

- never replaces a file the command reads (the labels CSV, the split file, a checkpoint, an image),
  not even with ``--force``;
- never replaces a file of a run folder (what ``attrfit train`` wrote: checkpoints, metrics, the
  run's config, split and report files), of this run or of any other, not even with ``--force``;
- never replaces any other existing file without ``--force``;
- is not a folder, and its folder can be made and written to (tried now, not after the work).

A command's own default output (``RUN/report.html`` for ``attrfit report RUN``) is made again
without ``--force``: it is what the command is for.

Example:
    >>> reads = Protected.of_runs([Path("runs/a")])  # doctest: +SKIP
    >>> check_output("page.html", force=False, protected=reads, what="comparison page", flag="--html")  # doctest: +SKIP
    PosixPath('page.html')
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from attrfit.core import files
from attrfit.core.errors import AttrfitError

# What ``attrfit train`` writes in a run folder; a folder among them counts with everything in it.
RUN_FILES = ("config.json", "schema.json", "split_ref.json", "split.json", "environment.json", "metrics.csv",
             "last.pt", "last.prev.pt", "best.pt", "results.json", "train.log", "budget.json", "tracking.json",
             "failed.json", "report.html", "report_val.html", ".lock")
RUN_FOLDERS = ("lr_find", "report_files", "report_val_files", "tensorboard")
CONFIG_KEYS = {"data", "model", "optim"}  # a config.json with these is an attrfit run's


def is_run_folder(folder: Path) -> bool:
    """Whether ``folder`` was made by ``attrfit train`` (its config.json is an attrfit config)."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and CONFIG_KEYS <= set(config)


def run_file_of(path: Path) -> Path | None:
    """The run folder ``path`` is a file of (a name ``attrfit train`` writes there), else None.

    >>> run_file_of(Path("runs/a/best.pt"))  # doctest: +SKIP
    PosixPath('runs/a')
    """
    path = Path(os.path.abspath(path))
    if path.name in RUN_FILES and is_run_folder(path.parent):
        return path.parent
    for folder in path.parents:  # inside one of a run's folders (lr_find/, report_files/, ...), at any depth
        if folder.name in RUN_FOLDERS and is_run_folder(folder.parent):
            return folder.parent
    return None


@dataclass
class Protected:
    """What a command reads, so its outputs never replace it: files, and folders whose images it reads."""

    files: list[Path] = field(default_factory=list)
    image_folders: list[Path] = field(default_factory=list)

    @classmethod
    def of_runs(cls, run_folders: Iterable[Path], extra: Iterable[Path] = ()) -> Protected:
        """The inputs of a command that reads runs: each run's files, its labels CSV, split file and images."""
        p = cls(files=[Path(f) for f in extra])
        for run in run_folders:
            p.add_run(Path(run))
        return p

    def add_run(self, target: Path) -> None:
        """A run folder or a checkpoint file (and then the run folder around it, when there is one)."""
        run = target if target.is_dir() else target.parent
        if not target.is_dir():
            self.files.append(target)
        if not is_run_folder(run):
            return
        self.files += [run / n for n in RUN_FILES]
        data = _read_json(run / "config.json").get("data") or {}
        split_ref = _read_json(run / "split_ref.json")
        self.files += [Path(p) for p in (data.get("csv"), data.get("split"), split_ref.get("path")) if p]
        if data.get("images") or data.get("csv"):
            self.image_folders.append(Path(data.get("images") or Path(data["csv"]).parent))

    def holds(self, path: Path) -> bool:
        if any(files.same_file(path, p) for p in self.files):
            return True
        if path.suffix.lower() not in files.IMAGE_EXTENSIONS:
            return False
        real = Path(os.path.realpath(path))
        return any(real.is_relative_to(os.path.realpath(f)) for f in self.image_folders)


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}


def check_output(path: str | os.PathLike, force: bool, protected: Protected | None = None, what: str = "output",
                 flag: str = "--out", default: Path | None = None) -> Path:
    """Refuse ``path`` as an output by the rules of this module; make its folder; return it.

    ``default`` is the command's own default output: it alone is replaced without ``force``.
    """
    path = Path(path)
    if path.is_dir():
        raise AttrfitError(f"{flag} {path} is a folder; give the name of a file to write (inside it, or elsewhere)")
    is_default = default is not None and os.path.abspath(path) == os.path.abspath(default)
    if path.exists() and not is_default:
        if protected is not None and protected.holds(path):
            raise AttrfitError(f"{flag} {path} is an input of this command (a file it reads, or a file of its run); "
                               "it is never replaced: choose another name")
        run = run_file_of(path)
        if run is not None:
            raise AttrfitError(f"{flag} {path} is a file of the run {run}; a run's files are never replaced: "
                               "choose another name")
        if not force:
            raise AttrfitError(f"{flag} {path} already exists; pass --force to replace it, or choose another name")
    files.probe_folder(files.make_folder(path.parent, f"folder of the {what}"), what)
    return path


def check_output_folder(folder: str | os.PathLike, what: str, flag: str = "--out") -> Path:
    """A folder a command writes several files into: never a run folder (or inside one's own folders)."""
    folder = Path(folder)
    if is_run_folder(folder) or run_file_of(folder / "x") is not None:
        raise AttrfitError(f"{flag} {folder} is a run folder (or one of its folders); a run's files are never "
                           "replaced: choose another folder")
    return folder
