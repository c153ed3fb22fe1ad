"""The pedestrian-attribute field's metrics for binary tables: hand-computed tiny cases, and a real run."""

import json

import numpy as np
import pytest
from PIL import Image

from attrfit import cli
from attrfit.recipe.config import TrainConfig, apply
from attrfit.evaluation.results import Results
from attrfit.evaluation.scoring import attribute_metrics, binary_table, format_table
from attrfit.evaluation.metrics import instance_metrics, instance_ratios, mean_accuracy_ma
from attrfit.data.schema import Schema
from attrfit.training.loop import fit
from helpers import write_rows


def test_instance_metrics_perfect_prediction_is_one():
    t = np.array([[1, 0, 1], [0, 1, 0]])
    assert instance_metrics(t, t) == {"accuracy": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0}


def test_instance_metrics_by_hand():
    # image 0: true {a, c}, predicted {a, b}: |P&Y| 1, |P|Y| 3, |P| 2, |Y| 2
    # image 1: true {b}, predicted {b, c}:    |P&Y| 1, |P|Y| 2, |P| 2, |Y| 1
    pred = np.array([[1, 1, 0], [0, 1, 1]])
    target = np.array([[1, 0, 1], [0, 1, 0]])
    m = instance_metrics(pred, target)
    assert m["accuracy"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert m["precision"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert m["recall"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["f1"] == pytest.approx(2 * 0.5 * 0.75 / (0.5 + 0.75))  # F1 of the means, as Jia et al.


def test_image_with_no_positive_counts_zero_and_missing_labels_are_left_out():
    # image 0 has no true and no predicted positive: every ratio is 0 (Jia et al.'s eps convention)
    # image 1: attribute b is missing (-1), so its predicted 1 is neither a hit nor a false positive
    pred = np.array([[0, 0, 0], [1, 1, 0]])
    target = np.array([[0, 0, 0], [1, -1, 0]])
    r = instance_ratios(pred, target)
    assert r["accuracy"].tolist() == [0.0, 1.0]
    assert r["precision"].tolist() == [0.0, 1.0]
    assert r["recall"].tolist() == [0.0, 1.0]
    assert instance_metrics(pred, target)["accuracy"] == 0.5


def test_mA_is_the_mean_of_positive_and_negative_recall():
    # attribute 0: positives 2 (1 found), negatives 2 (2 found): (0.5 + 1) / 2 = 0.75
    # attribute 1: positives 1 (1 found), negatives 3 (1 found): (1 + 1/3) / 2
    pred = np.array([[1, 1], [0, 1], [0, 0], [0, 1]])
    target = np.array([[1, 1], [1, 0], [0, 0], [0, 0]])
    assert mean_accuracy_ma(pred, target) == pytest.approx((0.75 + (1 + 1 / 3) / 2) / 2)


def test_binary_table_needs_every_head_binary():
    assert binary_table(Schema(("a", "b"), {"a": ("0", "1"), "b": ("0", "1")})) == [1, 1]
    assert binary_table(Schema(("a", "b"), {"a": ("0", "1"), "b": ("x", "y")})) is None
    assert binary_table(Schema(("a",), {"a": ("0", "1")})) is None


def test_attribute_metrics_maps_class_indices_to_presence():
    labels = np.array([[1, 0], [0, -1]])  # class indices; class '1' is index 1
    pred = np.array([[1, 1], [0, 0]])
    m = attribute_metrics(pred, labels, [1, 1])
    assert m.accuracy == pytest.approx((1 / 2 + 0) / 2)  # image 1 has no true or predicted positive
    assert m.n_images == 2 and m.n_attributes == 2


def write_binary(root, n=60, size=16):
    """Attributes 'red' and 'bright' (0/1) drawn into the images, like PETA's peta35.csv columns."""
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    rows = []
    for i in range(n):
        red, bright = i % 2, (i // 2) % 2
        a = rng.integers(0, 50, (size, size, 3)).astype(np.uint8)
        a[..., 0] += 150 * red
        a[..., 1] += 100 * bright
        Image.fromarray(a).save(root / f"img/{i}.png")
        rows.append({"image_path": f"img/{i}.png", "red": red, "bright": bright, "hat": (i // 4) % 2})
    return write_rows(root / "labels.csv", rows)


def test_binary_table_run_reports_the_field_metrics(tmp_path, capsys):
    csv_path = write_binary(tmp_path / "data")
    cfg = apply(TrainConfig(), {"data.csv": str(csv_path), "size": "16x16", "width": 8, "stages": 2, "epochs": 1,
                                "batch_size": 16, "lr": 0.05, "report": True, "precision": "fp32"})
    run = fit(cfg, run_dir=tmp_path / "run", progress=False)
    results = json.loads((run / "results.json").read_text())
    inst = results["instance"]
    assert set(inst) == {"mA", "accuracy", "precision", "recall", "f1", "n_images", "n_attributes"}
    assert inst["n_attributes"] == 3
    assert inst["mA"] == pytest.approx(results["mean"]["balanced_accuracy"])  # mA = mean balanced acc here
    assert "binary attributes (3): mA" in format_table(Results.from_json(results))
    assert "instance-based F1" in (run / "report.html").read_text(encoding="utf-8")
    assert cli.main(["evaluate", str(run), "--json", "--decide", "most-probable"]) == 0  # results.json's rule
    assert json.loads(capsys.readouterr().out)["instance"] == pytest.approx(inst)
    assert results["rules"]["threshold-f1"]["instance"]["n_attributes"] == 3  # every rule's field metrics
