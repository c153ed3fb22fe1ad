"""The benchmark scripts' ``--quick`` smoke runs: each exits 0 and writes the figures it promises.

The figures of a quick run mean nothing (tiny data, a shared machine); what is checked is that
every script still runs against the current library and writes a JSON with the keys that
BENCHMARKS.md is built from, with values in a sane range. The PETA benchmark is skipped where
../shared/data/peta is absent.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PETA = ROOT.parent / "shared" / "data" / "peta"


def run_quick(script: str, out: Path, *extra: str, timeout: int = 600) -> dict:
    # the timeout only catches a hang: a loaded 2-core machine once took 180 s for a 32 s script
    env = {**os.environ, "ATTRFIT_PROGRESS": "0"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--quick", "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "command: `" in proc.stdout and "|---|" in proc.stdout, proc.stdout  # a Markdown table + the command
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == script.removesuffix(".py")
    assert doc["machine"]["torch"] and doc["machine"]["cpu_count"] >= 1
    return doc


def positive(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def test_throughput_quick(tmp_path):
    r = run_quick("throughput.py", tmp_path / "t.json")["results"]
    for key in ("median_attrfit_images_per_s", "median_handwritten_images_per_s", "median_ratio",
                "forward_flops_per_image", "achieved_flops_per_s", "peak_bf16_matmul_flops_per_s",
                "peak_fp32_matmul_flops_per_s", "fraction_of_bf16_peak", "fraction_of_fp32_peak"):
        assert positive(r[key]), (key, r[key])
    assert len(r["attrfit_images_per_s"]) == len(r["handwritten_images_per_s"]) == len(r["ratios"]) >= 2
    assert r["train_flops_per_image"] == 3 * r["forward_flops_per_image"]
    assert r["fraction_of_bf16_peak"] == pytest.approx(r["achieved_flops_per_s"] / r["peak_bf16_matmul_flops_per_s"])


def test_data_and_inference_quick(tmp_path):
    r = run_quick("data_and_inference.py", tmp_path / "d.json")["results"]
    assert r["cache"]["images"] == 120  # every generated image decoded
    for key in ("build_s", "reload_s", "reload_and_read_s", "load_data_warm_s"):
        assert positive(r["cache"][key]), key
    assert 100 < r["train_memory"]["peak_rss_mib"] < 64 * 1024  # torch alone is ~100+ MiB
    for key in ("pixels_batch1_images_per_s", "pixels_batch64_images_per_s", "files_batch1_images_per_s",
                "files_batch64_images_per_s"):
        assert positive(r["predict"][key]), key


def test_inference_quick(tmp_path):
    r = run_quick("inference.py", tmp_path / "i.json")["results"]
    assert set(r["median_images_per_s"]) == {"attrfit", "hand-written"}
    assert all(positive(v) for v in r["median_images_per_s"].values()) and positive(r["median_ratio"])
    fwd, peak = r["forward_flops_per_image"], r["peak_bf16_matmul_flops_per_s"]
    assert r["fraction_of_bf16_peak"]["attrfit"] == pytest.approx(r["median_images_per_s"]["attrfit"] * fwd / peak)


def test_step_speed_quick(tmp_path):
    doc = run_quick("step_speed.py", tmp_path / "s.json", "--variant", "a=", "--variant", "w=model.width=16")
    flops = doc["train_flops_per_image"]
    assert set(doc["rates"]) == set(flops) == {"a", "w"} and positive(doc["peak_bf16_matmul_flops_per_s"])
    assert flops["w"] < flops["a"]  # half the width, about a quarter of the FLOPs: the override reached the model


@pytest.mark.skipif(not (PETA / "peta_heads.csv").is_file(),
                    reason=f"PETA not found at {PETA} (real data, read from ../shared/data; see its README)")
def test_peta_time_to_accuracy_quick(tmp_path):
    doc = run_quick("peta_time_to_accuracy.py", tmp_path / "p.json")
    assert (tmp_path / "p.png").stat().st_size > 0  # the accuracy-vs-wall-time curve
    for name, n_heads in (("heads", 8), ("35", 35)):
        r = doc["results"][name]
        assert len(r["test"]["heads"]) == n_heads
        # the epochs are what `train --budget` planned, re-planned or shortened at the budget's end (how many
        # depends on the machine's load: >= 1)
        plan = r["budget_plan"]
        assert r["epochs"] == len(r["curve"]) == plan["epochs"] >= 1
        walls = [p["wall_s"] for p in r["curve"]]
        assert all(positive(w) for w in walls) and walls == sorted(walls)
        for m in r["test"]["heads"].values():
            assert 0 <= m["balanced_accuracy"] <= 1 and 0 <= m["majority_accuracy"] <= 1
        assert 0 <= r["test"]["mean"]["balanced_accuracy"] <= 1


def test_bf16_check_quick(tmp_path):
    r = run_quick("bf16_check.py", tmp_path / "b.json")["results"]
    assert len(r) == 1 and r[0]["checked_layers"] == 12 and r[0]["batch_sizes"] == [1, 16, 32]
    # no test may depend on one CPU's arithmetic: which layers are kept in fp32 is the CPU's business
    assert isinstance(r[0]["fp32_layers"], list) and r[0]["worst_sound_error"] >= 0


def test_conv_passes_quick(tmp_path):
    """oneDNN's log is read: every pass of the step's convolutions, with a kernel and a rate, sums that add up."""
    r = run_quick("conv_passes.py", tmp_path / "c.json")
    passes = {row[0] for row in r["rows"]}
    assert passes == {"forward_training", "backward_data", "backward_weights"}
    assert all(row[2] and positive(row[3]) and positive(row[4]) for row in r["rows"])
    for name, ms, gflops in r["totals"]:
        assert ms == pytest.approx(sum(row[3] for row in r["rows"] if row[0] == name), abs=0.01)
        assert positive(gflops)


def test_dataset_scale_quick(tmp_path):
    pytest.importorskip("scipy", reason="the 'datasets' extra (scipy, h5py) is not installed")
    r = run_quick("dataset_scale.py", tmp_path / "s.json")["results"]
    steps = ("import", "split", "cache build", "one epoch", "evaluate")
    assert [run["images"] for run in r["runs"]] == [200, 400]
    for run in r["runs"]:
        assert set(run["steps"]) == set(steps)
        for step in steps:
            assert positive(run["steps"][step]["seconds"]), step
            assert 50 < run["steps"][step]["peak_rss_mib"] < 64 * 1024, step  # an attrfit process: torch alone is ~100 MiB
        assert positive(run["cache_mib"])
    for step in steps:
        assert positive(r["growth"][step]["ratio_largest_to_smallest"]), step


def test_boxes_quick(tmp_path):
    pytest.importorskip("av", reason="PyAV (the [video] extra) is not installed: pip install 'attrfit[video]'")
    r = run_quick("boxes.py", tmp_path / "b.json")["results"]
    speed = r["speed"]
    assert speed["boxes"] == speed["frames"] * speed["boxes_per_frame"] > 0
    assert set(speed["median_boxes_per_s"]) == {"decode frames (JPEG)", "decode video", "decode + crop, frames",
                                                "decode + crop, video", "model alone", "boxes from frames",
                                                "boxes from video"}
    assert all(positive(v) for v in speed["median_boxes_per_s"].values())
    for kind in ("independent", "same look"):
        a = r["accuracy"][kind]
        assert len(a["heads"]) == 8 and a["boxes"] == a["tracks"] * 3
        for m in [*a["heads"].values(), a["mean"]]:
            assert all(0 <= m[k] <= 1 for k in ("box_accuracy", "track_accuracy", "majority_accuracy"))
        lo, hi = a["gain_ci95"]
        assert -1 <= lo <= hi <= 1 and a["gain"] == pytest.approx(a["mean"]["track_accuracy"] - a["mean"]["box_accuracy"])
