"""A --resize pad run at a non-square size (16x8) whose class names do not sort alphabetically ('1', '2', '10'):
prediction, --all-probs and export keep the run's resize mode, its H x W and its order of classes."""

import csv
import json
import warnings

import numpy as np
import pytest
import torch
from helpers import ODD_COLORS

import attrfit
from attrfit import cli
from attrfit.evaluation.scoring import score_checkpoint
from attrfit.serving.export import export_model
from attrfit.serving.predict import stack_pixels

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_the_run_is_what_these_tests_need(trained_odd):
    predictor = attrfit.load(trained_odd[0])
    assert predictor.resize == "pad" and predictor.size == (16, 8)
    assert predictor.schema.classes["color"] == tuple(ODD_COLORS) != tuple(sorted(ODD_COLORS))


def test_predicting_a_pad_runs_test_images_reproduces_evaluate(trained_odd):
    """Images are letterboxed as the run's cache was (a stretch would change every probability)."""
    run, labels = trained_odd
    scored = score_checkpoint(str(run), side="test", progress=False, device="cpu")
    got = attrfit.load(run).predict([labels.parent / p for p in scored.paths], batch_size=5)
    for j, head in enumerate(scored.schema.heads):
        np.testing.assert_allclose(got.probs[head], scored.probs[j], atol=1e-6)


def test_all_probs_columns_are_each_class_in_the_runs_order(trained_odd, tmp_path):
    run, labels = trained_odd
    paths = [labels.parent / f"img/{i}.png" for i in range(9)]
    out = tmp_path / "pred.csv"
    assert cli.main(["predict", str(run), *map(str, paths), "--all-probs", "--out", str(out), "--quiet"]) == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [c for c in rows[0] if c.startswith("color_prob_")] == [f"color_prob_{c}" for c in ODD_COLORS]
    expected = attrfit.load(run).predict(paths)
    for i, row in enumerate(rows):
        for k, c in enumerate(ODD_COLORS):
            assert float(row[f"color_prob_{c}"]) == pytest.approx(float(expected.probs["color"][i, k]), abs=2e-6)
        assert row["color"] == expected.labels["color"][i]
        assert float(row["color_prob"]) == pytest.approx(float(row[f"color_prob_{row['color']}"]), abs=2e-6)


def test_the_export_keeps_the_runs_size_resize_and_class_order(trained_odd, tmp_path):
    run, labels = trained_odd
    predictor = attrfit.load(run)
    export_model(run, tmp_path / "model.pt")
    schema = json.loads((tmp_path / "model.pt.schema.json").read_text())
    assert schema["size"] == [16, 8] and schema["input"]["shape"] == ["batch", 3, 16, 8]
    assert schema["resize"] == "pad"
    assert schema["classes"]["color"] == ODD_COLORS == next(o["classes"] for o in schema["outputs"] if o["head"] == "color")
    paths = [labels.parent / f"img/{i}.png" for i in range(9)]
    pixels = stack_pixels([predictor.prepare(p) for p in paths]).contiguous()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)
        out = torch.jit.load(str(tmp_path / "model.pt"))(pixels)
    expected = predictor.predict(paths)
    for o in schema["outputs"]:  # each output column is the class the schema names for it
        np.testing.assert_allclose(out[o["name"]].numpy(), expected.probs[o["head"]], atol=1e-5)
