"""What the tests share besides fixtures: tiny generated datasets, the command line in-process, simulated
crashes and full disks, and where the repository and the shared data are.

Tests import these with ``from helpers import ...`` (``tests/`` is on the path, pyproject.toml); the
fixtures built on them are in ``tests/conftest.py``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from attrfit.core import files
from attrfit.recipe.config import PLAIN_RECIPE  # noqa: F401 (the mechanics tests train with it; tests of the defaults use TrainConfig())

ROOT = Path(__file__).resolve().parents[1]  # the repository
SHARED = ROOT.parent / "shared" / "data"  # real data for the tests that skip without it
COLORS = ["blue", "green", "red"]


class Crash(Exception):
    """A simulated kill of a training run (see :func:`crash_at_step`)."""


def crash_at_step(monkeypatch, step: int):
    """Make training step ``step`` raise :class:`Crash`; returns the function that puts the real step back."""
    import attrfit.training.trainer as trainer

    real = trainer.train_step

    def crashing(t, x, y, s, *a):
        if s == step:
            raise Crash()
        return real(t, x, y, s, *a)

    monkeypatch.setattr(trainer, "train_step", crashing)
    return lambda: monkeypatch.setattr(trainer, "train_step", real)


def write_tiny(root: Path, n: int = 60, seed: int = 0, size: int = 24, missing_every: int = 7,
               groups: int | None = None, fmt: str = "png") -> Path:
    """n images whose label 'color' is the dominant channel and 'bright' the brightness.

    Every ``missing_every``-th row has an empty 'bright' (a missing label). With ``groups``
    a 'pid' column assigns rows to that many groups. Returns the CSV path.
    """
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        c = i % 3
        bright = (i // 3) % 2
        a = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
        a[..., 2 - c] += 120 + 60 * bright  # RGB order: blue=2, green=1, red=0 -> channel 2-c
        name = f"img/{i}.{fmt}"
        Image.fromarray(a).save(root / name)
        row = {"image_path": name, "color": COLORS[c], "bright": ["dark", "light"][bright]}
        if missing_every and i % missing_every == 3:
            row["bright"] = ""
        if groups:
            row["pid"] = f"p{i % groups}"
        rows.append(row)
    return write_rows(root / "labels.csv", rows)


ODD_COLORS = ["1", "2", "10"]  # class names whose training order (natural: 1, 2, 10) is not alphabetical (1, 10, 2)


def write_odd(root: Path, n: int = 60, seed: int = 0, height: int = 30, width: int = 18) -> Path:
    """:func:`write_tiny`'s task on tall images (``height`` x ``width``), its colours named ``ODD_COLORS``: the data
    of a ``--resize pad`` run at a non-square size whose class names do not sort alphabetically."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        c, bright = i % 3, (i // 3) % 2
        a = rng.integers(0, 60, (height, width, 3)).astype(np.uint8)
        a[..., 2 - c] += 120 + 60 * bright
        a[: height // 4] = 30 * c  # a band whose share of the image the resize mode changes
        Image.fromarray(a).save(root / f"img/{i}.png")
        rows.append({"image_path": f"img/{i}.png", "color": ODD_COLORS[c], "bright": ["dark", "light"][bright]})
    return write_rows(root / "labels.csv", rows)


def write_rows(path: Path, rows: list[dict]) -> Path:
    """A labels CSV from dicts (the first row's keys are the columns)."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def cli(capsys, *argv) -> tuple[int, str, str]:
    """Run ``attrfit ARGV`` in-process; (exit code, stdout, stderr)."""
    from attrfit.cli.app import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error(code: int, err: str, *needles: str) -> str:
    """Exit 2, one 'attrfit: error:' line on stderr (log lines may precede it), no traceback; returns the line."""
    assert code == 2, err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("attrfit: error:")]
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]), err
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name) if folder.exists() else []


def full_disk(monkeypatch, only: str = "") -> None:
    """Atomic writes (of files whose name holds ``only``) get a real temp file, but their bytes go to
    /dev/full (ENOSPC from the kernel)."""
    real = files._create

    def create(tmp, text=False, **open_args):
        if only not in tmp.name:
            return real(tmp, text, **open_args)
        real(tmp, text, **open_args).close()
        return open("/dev/full", "w" if text else "wb", **open_args)

    monkeypatch.setattr(files, "_create", create)


def tiny_cfg(csv, **over):
    """A TrainConfig of a tiny run on ``csv`` (16x16, width 8, 3 epochs) with the plain recipe; ``over`` wins."""
    from attrfit.recipe.config import TrainConfig, apply

    base = {"data.csv": str(csv), "size": "16x16", "width": 8, "stages": 2, "epochs": 3, "batch_size": 16,
            "lr": 0.05, "eval_batch_size": 64, "report": False, "seed": 1, "precision": "fp32"}
    return apply(TrainConfig(), {**PLAIN_RECIPE, **base, **over})


def trained_tiny_report_run(root: Path) -> Path:
    """A 2-epoch run of the default recipe on the tiny dataset under ``root``; train writes its report at the end."""
    from attrfit.recipe.config import TrainConfig, apply
    from attrfit.training.loop import fit

    csv = write_tiny(root / "data")
    cfg = apply(TrainConfig(), {"data.csv": str(csv), "size": "16x16", "width": 8, "stages": 2, "epochs": 2,
                                "batch_size": 16, "lr": 0.05, "eval_batch_size": 64, "report": True,
                                "precision": "fp32", "data.cache_dir": str(root / "cache")})
    return fit(cfg, run_dir=root / "run", progress=False)
