"""bench/schema_client.py, a client written from the export schema alone, reproduces `attrfit predict` under every
decision rule; and evaluate, predict and the exported model agree on the test images rule by rule."""

from __future__ import annotations

import csv
import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from attrfit import cli
from attrfit.data.split import load_split
from attrfit.evaluation.decisions import CheckpointRef, Decisions, FittedOn, HeadDecision
from attrfit.evaluation.scoring import score_checkpoint
from attrfit.model.checkpoint import Checkpoint
from attrfit.serving.export import export_model

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
ROOT = Path(__file__).resolve().parents[2]
RULES = ("most-probable", "prior-corrected", "threshold-balanced", "threshold-f1")


def client():
    pytest.importorskip("onnxruntime", reason="the client runs the ONNX export: pip install 'attrfit[export]'")
    spec = importlib.util.spec_from_file_location("schema_client", ROOT / "bench" / "schema_client.py")
    module = sys.modules["schema_client"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def with_decisions(source: Path, folder: Path) -> Path:
    """A copy of ``source`` whose decisions.json makes the rules answer differently on its test side: colour's
    most often predicted class all but ruled out by its prior, bright's thresholds above and below every
    probability, and temperatures far from 1."""
    run = Path(shutil.copytree(source, folder / "run"))
    best = Checkpoint.load(run / "best.pt")
    top = int(np.bincount(score_checkpoint(str(run), "test", progress=False, device="cpu").probs[0].argmax(1)).argmax())
    prior = tuple(0.999998 if k == top else 1e-6 for k in range(3))
    heads = {"color": HeadDecision(2.5, prior),
             "bright": HeadDecision(0.5, (0.7, 0.3), 1, {"threshold-balanced": 1.5, "threshold-f1": -0.5})}
    ref = CheckpointRef("best.pt", best.progress.epoch, best.progress.step)
    Decisions(heads, 1.5, "balanced", "prior-corrected", ref, FittedOn("val", 0, False)).write(run)
    return run


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_evaluate_predict_and_the_exported_model_agree_under_every_rule(trained_tiny, tmp_path):
    schema_client = client()
    source, labels = trained_tiny
    run = with_decisions(source, tmp_path)
    export_model(run, tmp_path / "model.onnx")
    test_paths = load_split(labels.parent / "labels.split.json").sides["test"]
    listing = labels.parent / "test_side.csv"
    listing.write_text("image_path\n" + "\n".join(test_paths) + "\n")
    answers = {}
    for rule in RULES:
        scored = score_checkpoint(str(run), "test", progress=False, device="cpu", decide=rule)
        assert scored.results.decision == rule and scored.paths == test_paths
        evaluated = [{h: scored.schema.classes[h][scored.pred[j][i]] for j, h in enumerate(scored.schema.heads)}
                     for i in range(len(test_paths))]
        out = tmp_path / f"{rule}.csv"
        assert cli.main(["predict", str(run), str(listing), "--decide", rule, "--out", str(out), "--quiet"]) == 0
        predicted = read_csv(out)
        exported = schema_client.predict(tmp_path / "model.onnx", [labels.parent / p for p in test_paths], rule)
        for i, (e, p, x) in enumerate(zip(evaluated, predicted, exported)):
            for j, h in enumerate(scored.schema.heads):
                assert e[h] == p[h] == x[h], (rule, test_paths[i], h)
                k = scored.schema.classes[h].index(e[h])
                assert float(p[f"{h}_prob"]) == pytest.approx(float(scored.probs[j][i, k]), abs=2e-6)
                assert x[f"{h}_prob"] == pytest.approx(float(p[f"{h}_prob"]), abs=1e-5)
        answers[rule] = [tuple(r.values()) for r in evaluated]
    # the rules answer differently, so the agreement above is not the same answer four times
    assert [a[0] for a in answers["most-probable"]] != [a[0] for a in answers["prior-corrected"]]
    assert {a[1] for a in answers["threshold-balanced"]} == {"dark"} and {a[1] for a in answers["threshold-f1"]} == {"light"}


def test_the_client_follows_a_pad_runs_schema(trained_odd, tmp_path):
    """The schema says how a --resize pad run letterboxes a tall image; the client does it from that alone."""
    schema_client = client()
    run, labels = trained_odd
    export_model(run, tmp_path / "model.onnx")
    paths = [labels.parent / f"img/{i}.png" for i in range(12)]
    out = tmp_path / "pred.csv"
    assert cli.main(["predict", str(run), *map(str, paths), "--out", str(out), "--quiet"]) == 0
    for p, x in zip(read_csv(out), schema_client.predict(tmp_path / "model.onnx", paths)):
        assert (p["color"], p["bright"]) == (x["color"], x["bright"])
        assert x["color_prob"] == pytest.approx(float(p["color_prob"]), abs=1e-5)
