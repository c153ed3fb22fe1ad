"""The per-head results contract: one typed Results (evaluation/results.py) with one reader and writer."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

import attrfit
from attrfit.core import runs
from attrfit.core.errors import AttrfitError
from attrfit.evaluation.results import HeadMetrics, InstanceMetrics, MeanMetrics, Results
from attrfit.evaluation.scoring import format_table
from attrfit.model.checkpoint import Checkpoint
from conftest import cli

SRC = Path(__file__).resolve().parents[1] / "src" / "attrfit"
NAN = float("nan")

# metrics.csv of a run on tiny data (heads color, bright), as attrfit wrote it before the dataclass
METRICS_CSV_HEADER = [
    "epoch", "step", "lr", "train_loss", "train_loss_color", "train_loss_bright", "train_accuracy_color",
    "train_accuracy_bright", "val_accuracy_color", "val_balanced_accuracy_color", "val_majority_accuracy_color",
    "val_accuracy_bright", "val_balanced_accuracy_bright", "val_majority_accuracy_bright", "val_mean_accuracy",
    "val_mean_balanced_accuracy", "val_mean_majority_accuracy", "train_mean_accuracy", "seconds", "wall_s",
    "images_per_s"]


def sample() -> Results:
    """A scored side with a head without labels and the binary-table metrics."""
    return Results({"a": HeadMetrics(0.75, 0.5, 0.4, 0.5, 8, 1.0), "b": HeadMetrics.empty()},
                   MeanMetrics(0.75, 0.5, 0.5, 0.4), InstanceMetrics(0.5, 0.25, 0.5, 0.25, 1 / 3, 8, 2),
                   side="val", checkpoint="runs/x/best.pt", epoch=3, tta=False)


def test_to_json_and_from_json_round_trip():
    r = sample()
    d = r.to_json()
    assert list(d) == ["heads", "mean", "instance", "side", "checkpoint", "epoch", "tta"]
    assert list(d["heads"]["a"]) == ["accuracy", "balanced_accuracy", "macro_f1", "majority_accuracy", "n",
                                     "pred_top_share"]
    assert d["heads"]["b"] == {**dict.fromkeys(d["heads"]["a"]), "n": 0}  # NaN -> null
    text = json.dumps(d, allow_nan=False)
    back = Results.from_json(json.loads(text))
    assert json.dumps(back.to_json(), allow_nan=False) == text
    assert back.heads["a"] == r.heads["a"] and back.instance == r.instance and back.epoch == 3
    assert math.isnan(back.heads["b"].accuracy) and back.heads["b"].n == 0


def test_a_finished_runs_fields_are_written_together_in_results_json_order():
    r = Results({"a": HeadMetrics(1.0, 1.0, 1.0, 0.5, 2, 0.5)}, MeanMetrics(1.0, 1.0, 0.5, 1.0), side="test",
                checkpoint="best.pt", best_epoch=2, monitor="mean_accuracy", wall_time_s=1.5, images_per_s=None)
    d = r.to_json()
    assert list(d)[2:] == ["side", "checkpoint", "best_epoch", "monitor", "wall_time_s", "images_per_s"]
    assert d["images_per_s"] is None  # known to be missing, still written
    assert Results.from_json(d).to_json() == d


def test_the_runs_results_json_reads_back_byte_for_byte(trained_tiny):
    run, _ = trained_tiny
    text = (run / "results.json").read_text()
    r = Results.from_json(json.loads(text))
    assert r.best_epoch >= 1 and r.heads["color"].n > 0 and r.instance is None
    rewritten = run.parent / "rewritten.json"
    runs.write_json(rewritten, r.to_json())  # the writer finish() uses
    assert rewritten.read_text() == text


def test_an_older_results_file_reads_with_its_missing_metrics_as_nan():
    older = {"heads": {"a": {"accuracy": 0.8, "balanced_accuracy": 0.7, "majority_accuracy": 0.5, "n": 10}},
             "mean": {"accuracy": 0.8, "balanced_accuracy": 0.7, "majority_accuracy": 0.5},
             "side": "test", "checkpoint": "best.pt", "best_epoch": 4, "monitor": "mean_accuracy"}
    r = Results.from_json(older)
    assert math.isnan(r.heads["a"].macro_f1) and math.isnan(r.heads["a"].pred_top_share)
    assert math.isnan(r.mean.macro_f1) and r.best_epoch == 4 and r.wall_time_s is None
    assert "a                  0.800   0.700    0.500  +0.300     10" in format_table(r)


def test_a_file_that_is_no_results_is_a_clear_error():
    with pytest.raises(AttrfitError, match=r"x/results.json: not the per-head results attrfit writes"):
        Results.from_json({"mean": {}}, "x/results.json")


def test_columns_are_the_metrics_csv_val_columns_in_order():
    assert list(sample().columns("val")) == [
        "val_accuracy_a", "val_balanced_accuracy_a", "val_majority_accuracy_a",
        "val_accuracy_b", "val_balanced_accuracy_b", "val_majority_accuracy_b",
        "val_mean_accuracy", "val_mean_balanced_accuracy", "val_mean_majority_accuracy"]


def test_metrics_csv_header_is_unchanged(trained_tiny):
    run, _ = trained_tiny
    assert (run / "metrics.csv").read_text().splitlines()[0].split(",") == METRICS_CSV_HEADER


def test_best_pt_holds_its_val_results_in_the_same_json(trained_tiny):
    run, _ = trained_tiny
    best = Checkpoint.load(run / "best.pt")
    val = Results.from_json(best.val)
    assert val.to_json() == best.val and set(val.heads) == {"color", "bright"}


def test_evaluate_returns_results_and_its_json_is_what_the_cli_prints(trained_tiny, capsys):
    run, _ = trained_tiny
    r = attrfit.evaluate(run, side="val", progress=False, device="cpu")
    best_epoch = Checkpoint.load(Path(run) / "best.pt").progress.epoch  # 1 or 2: whichever val scored higher
    assert isinstance(r, Results) and r.side == "val" and r.epoch == best_epoch and r.tta is False
    code, out, _ = cli(capsys, "evaluate", run, "--side", "val", "--json", "--device", "cpu")
    assert code == 0 and json.loads(out) == r.to_json()


# ---------------------------------------------------------------- one reader and writer of the keys

# a results dict indexed by its keys: x["heads"][h], x["mean"]["accuracy"], x["heads"].items(), x.get("mean")
SPELLED = re.compile(r"""\[["'](heads|mean|instance)["']\]\s*(\[|\.items\(|\.values\(|\.get\()"""
                     r"""|\.get\(["'](heads|mean|instance)["']""")
# core sits below evaluation (tests/test_architecture.py), so `attrfit runs` reads results.json's two means itself
ALLOWED = {"core/listing.py"}


def test_the_pattern_catches_how_results_were_read():
    for line in ('val["mean"]["accuracy"]', 'for h, m in results["heads"].items():',
                 '(facts.results or {}).get("heads")', 'results.get("instance")'):
        assert SPELLED.search(line), line
    for line in ('heads = tuple(d["heads"])', '"normalisation": {"mean": spec["mean"]', 'results.mean.accuracy'):
        assert not SPELLED.search(line), line


def test_no_module_outside_evaluation_reads_results_by_string_keys():
    offenders = [f"{p.relative_to(SRC)}:{i}" for p in SRC.rglob("*.py")
                 if p.parent.name != "evaluation" and str(p.relative_to(SRC)) not in ALLOWED
                 for i, line in enumerate(p.read_text().splitlines(), 1) if SPELLED.search(line)]
    assert not offenders, f"read Results attributes (evaluation/results.py) instead: {offenders}"
