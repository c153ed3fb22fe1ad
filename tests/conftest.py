"""Fixtures: tiny generated datasets and a trained run shared by pytest's whole session (tests never need real data)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from helpers import PLAIN_RECIPE, write_odd, write_tiny

os.environ.setdefault("ATTRFIT_PROGRESS", "0")
# Tiny models: one thread is faster and immune to a busy machine (subprocesses keep their own setting).
torch.set_num_threads(1)


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


@pytest.fixture
def run(trained_tiny, tmp_path) -> Path:
    """A private copy of pytest's session-wide tiny run (for tests that try to change or overwrite its files)."""
    return Path(shutil.copytree(trained_tiny[0], tmp_path / "run"))


@pytest.fixture(scope="session")
def trained_odd(tmp_path_factory):
    """(run folder, labels CSV): a 2-epoch --resize pad run at 16x8 on tall images whose colour classes ('1', '2',
    '10') do not sort alphabetically; trained once and shared (treat as read-only)."""
    from attrfit.recipe.config import TrainConfig, apply
    from attrfit.training.loop import fit

    root = tmp_path_factory.mktemp("trained_odd")
    csv_path = write_odd(root / "data")
    cfg = apply(TrainConfig(), {**PLAIN_RECIPE, "data.csv": str(csv_path), "size": "16x8", "resize": "pad", "width": 8,
                                "stages": 2, "epochs": 2, "batch_size": 16, "lr": 0.05, "report": False,
                                "precision": "fp32", "data.cache_dir": str(root / "cache")})
    return fit(cfg, run_dir=root / "run", progress=False), csv_path
