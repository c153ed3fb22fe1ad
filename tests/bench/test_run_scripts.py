"""The benchmark scripts that prepare or read runs: bench/ensemble.py, bench/calibration_variants.py and
bench/data_size.py's table of fewer people.

Two tiny runs of the default recipe on one split; each script must reproduce what the runs
themselves wrote (a group of one run is that run: its decisions, its test numbers; the per-head
temperatures are decisions.json's), which a script that scored the wrong side, rule or
probabilities would not.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import write_tiny

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))  # the scripts import their shared module as `common`
_spec = importlib.util.spec_from_file_location("bench_data_size", ROOT / "bench" / "data_size.py")
data_size = sys.modules["bench_data_size"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(data_size)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    from attrfit.recipe.config import TrainConfig, apply
    from attrfit.training.loop import fit

    root = tmp_path_factory.mktemp("runs")
    csv = write_tiny(root / "data", n=90)
    runs = []
    for seed in (0, 1):
        cfg = apply(TrainConfig(), {"data.csv": str(csv), "size": "16x16", "width": 8, "stages": 2, "epochs": 2,
                                    "batch_size": 16, "lr": 0.05, "eval_batch_size": 64, "report": False,
                                    "precision": "fp32", "data.cache_dir": str(root / "cache"), "seed": seed})
        runs.append(fit(cfg, run_dir=root / f"run{seed}", progress=False))
    return runs[0], runs[1]


def run_script(script: str, out: Path, *args: str) -> dict:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--out", str(out), *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "command: `" in proc.stdout and "|---|" in proc.stdout
    return json.loads(out.read_text())


def test_ensemble_of_one_run_is_that_run(two_runs, tmp_path):
    a, b = two_runs
    doc = run_script("ensemble.py", tmp_path / "e.json", str(a), str(b), f"{a},{b}")
    lines = {(x["group"], x["rule"]): x for x in doc["groups"]}
    rules = json.loads((a / "results.json").read_text())["rules"]
    for rule in ("prior-corrected", "most-probable"):
        own = lines[a.name, rule]
        assert own["balanced_accuracy_diff"] == 0 and own["balanced_accuracy_ci"] == [0, 0]
        assert own["balanced_accuracy"] == pytest.approx(rules[rule]["mean"]["balanced_accuracy"], abs=1e-9)
        assert own["accuracy"] == pytest.approx(rules[rule]["mean"]["accuracy"], abs=1e-9)
        other = lines[b.name, rule]  # b paired against a: the interval holds the point difference
        lo, hi = other["balanced_accuracy_ci"]
        assert lo <= other["balanced_accuracy_diff"] <= hi
    assert {x["group"] for x in doc["groups"]} == {a.name, b.name, f"{a.name} + {b.name}"}


def test_calibration_variants_per_head_is_the_runs_own(two_runs, tmp_path):
    a, _ = two_runs
    doc = run_script("calibration_variants.py", tmp_path / "c.json", str(a))
    variants = {x["variant"]: x for x in doc["runs"]}
    assert set(variants) == {"none", "per head", "per head size"}
    decisions = json.loads((a / "decisions.json").read_text())
    own = [h["temperature"] for h in decisions["heads"].values()]
    assert variants["per head"]["temperatures"] == pytest.approx(own, rel=1e-6)
    assert variants["none"]["temperatures"] == [1.0] * len(own)
    calibration = json.loads((a / "results.json").read_text())["calibration"]["heads"]
    ece = [h["ece"] for h in calibration.values()]  # the run's own test ECE after its temperatures
    assert variants["per head"]["mean"] == pytest.approx(sum(ece) / len(ece), abs=1e-9)


def test_data_size_keeps_val_and_test_and_a_share_of_the_train_people(tmp_path):
    import common
    from attrfit.data.split import load_split, make_split, save_split, verify_split
    from attrfit.data.table import read_table

    labels = common.make_people(tmp_path / "data", n=150)  # 50 people, 3 images each
    split = make_split(read_table(labels, group_column="person_id"), seed=0)
    save_split(split, tmp_path / "whole.split.json")
    (tmp_path / "out").mkdir()
    table, split_path, kept = data_size.subset(labels, tmp_path / "whole.split.json", 0.5, tmp_path / "out")
    new = load_split(split_path)
    assert new.sides["val"] == split.sides["val"] and new.sides["test"] == split.sides["test"]
    assert set(new.sides["train"]) < set(split.sides["train"])
    with open(labels, newline="") as f:
        person = {r["image_path"]: r["person_id"] for r in csv.DictReader(f)}
    train_people = {person[p] for p in new.sides["train"]}
    assert len(train_people) == kept["people"] == round(0.5 * kept["of_people"])
    # a kept person keeps every train image: people are never cut in two
    assert sorted(new.sides["train"]) == sorted(p for p in split.sides["train"] if person[p] in train_people)
    # the split fits its table as `attrfit train --split` checks it (table fingerprint, rows, groups)
    verify_split(new, read_table(table, images=labels.parent, group_column="person_id", schema=new.schema), split_path)
