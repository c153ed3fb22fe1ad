"""Tiny generated datasets: tests never need real data (../shared/data is optional)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("ATTRFIT_PROGRESS", "0")
# Tiny models: one thread is faster and immune to a busy machine (subprocesses keep their own setting).
torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
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


# The recipe the mechanics tests train tiny models with: plain cross-entropy, best epoch by mean
# accuracy, no mixup or colour jitter. The default recipe (balanced, mixup, jitter; BENCHMARKS §10)
# is tuned for real datasets and long runs; on 60 images and a few steps it learns too slowly for
# tests that need a model which has learned something. Tests of the defaults use TrainConfig().
PLAIN_RECIPE = {"class_weights": False, "monitor": "mean_accuracy", "mixup": 0.0, "brightness": 0.0, "contrast": 0.0,
                "ema": 0.0}


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


def write_rows(path: Path, rows: list[dict]) -> Path:
    """A labels CSV from dicts (the first row's keys are the columns)."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture
def tiny(tmp_path) -> Path:
    return write_tiny(tmp_path / "data")


@pytest.fixture
def tiny_groups(tmp_path) -> Path:
    return write_tiny(tmp_path / "data", n=90, groups=20)


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTRFIT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory):
    """(run folder, labels CSV): a 2-epoch run on tiny data, trained once and shared (treat as read-only)."""
    from attrfit.recipe.config import TrainConfig, apply
    from attrfit.training.loop import fit

    root = tmp_path_factory.mktemp("trained_tiny")
    csv_path = write_tiny(root / "data")
    cfg = apply(TrainConfig(), {**PLAIN_RECIPE, "data.csv": str(csv_path), "size": "16x16", "width": 8, "stages": 2,
                                "epochs": 2, "batch_size": 16, "lr": 0.05, "report": False, "precision": "fp32",
                                "data.cache_dir": str(root / "cache")})
    return fit(cfg, run_dir=root / "run", progress=False), csv_path


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
