"""Freed memory kept in the process (attrfit.core.memory): each step reuses the last one's pages."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

from attrfit.core import memory
from attrfit.recipe.config import TrainConfig, apply
from attrfit.training.loop import fit
from helpers import write_tiny

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# A training step's big buffers: four 12 MiB blocks alive at once, written, then all freed; 16 steps.
# Prints the minor page faults of the last 8 steps (the first ones map the pages once). glibc's own
# malloc and free, not torch's: torch aligns its blocks, and the leftovers of that alignment land at
# random places in the heap, so whether its default gives the top back varies run to run.
FAULTS = textwrap.dedent("""
    import ctypes, ctypes.util, resource, sys
    from attrfit.core.memory import keep_freed_memory
    said = keep_freed_memory() if sys.argv[1] == "keep" else "not called"
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
    n, counts = 12 * 2**20, []
    for step in range(16):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        blocks = [libc.malloc(n) for _ in range(4)]
        for block in blocks:
            ctypes.memset(block, 1, n)
        for block in blocks:
            libc.free(block)
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(said, sum(counts[8:]))
""")
PAGES = 12 * 2**20 // 4096  # one written 12 MiB block, in 4 KiB pages


def _faults(mode: str) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k not in memory.USER_SETTINGS and k != "LD_PRELOAD"}
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    return " ".join(out[:-1]), int(out[-1])


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only (Linux with glibc)")
def test_kept_memory_is_reused_without_page_faults():
    said, kept = _faults("keep")
    assert said == "kept"
    assert kept < PAGES // 10, f"{kept} page faults in 8 steps with freed memory kept"


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only (Linux with glibc)")
def test_without_it_glibc_maps_each_steps_buffers_afresh():
    """Why the call exists: glibc's default gives the freed top of its heap back at every step (trim)."""
    said, faults = _faults("default")
    assert said == "not called"
    assert faults > 8 * PAGES, f"only {faults} page faults in 8 steps: this glibc already keeps the memory"


@pytest.mark.parametrize("env", [{"MALLOC_TRIM_THRESHOLD_": "0"}, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"},
                                 {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}])
def test_a_users_allocator_settings_are_left_alone(monkeypatch, env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert memory.keep_freed_memory() == "user's setting"


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only (Linux with glibc)")
def test_a_training_run_records_it(tmp_path):
    cfg = apply(TrainConfig(), {"data.csv": str(write_tiny(tmp_path / "data", n=24, size=16)), "size": "16x16",
                                "epochs": 1, "batch_size": 8, "report": False, "threads": 1,
                                "data.cache_dir": str(tmp_path / "cache")})
    run = fit(cfg, run_dir=tmp_path / "run", progress=False)
    assert json.loads((run / "environment.json").read_text())["freed_memory"] == "kept"
