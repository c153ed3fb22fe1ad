"""The end of a run (training/final.py): the decision rules fitted on the val side and saved for best.pt, then the
test side scored once under them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from attrfit.data.load import load_data
from attrfit.evaluation.decisions import RULES, CheckpointRef, Decisions
from attrfit.model.checkpoint import Checkpoint
from attrfit.training import final
from attrfit.training.loop import fit
from helpers import tiny_cfg


@pytest.mark.parametrize("objective, rule", [("balanced", "prior-corrected"), ("accuracy", "most-probable")])
def test_the_decisions_are_fitted_on_the_val_side_and_saved_for_best_pt(tiny, tmp_path, monkeypatch, objective, rule):
    seen = []
    real = final.fit_decisions

    def spy(raw, labels, train_labels, *a):
        seen.append((raw, labels, train_labels))
        return real(raw, labels, train_labels, *a)

    monkeypatch.setattr(final, "fit_decisions", spy)
    cfg = tiny_cfg(tiny, epochs=2, objective=objective)
    run = fit(cfg, run_dir=tmp_path / "run", progress=False)
    data = load_data(cfg.data, progress=False)
    (raw, labels, train_labels), = seen
    assert np.array_equal(labels, data.labels[data.sides["val"]].numpy())  # val, never test
    assert np.array_equal(train_labels, data.labels[data.sides["train"]].numpy())
    assert [len(p) for p in raw] == [len(data.sides["val"])] * 2
    d = Decisions.from_json(json.loads((run / "decisions.json").read_text()))
    best = Checkpoint.load(run / "best.pt")
    assert d.checkpoint == CheckpointRef("best.pt", best.progress.epoch, best.progress.step)
    assert (d.objective, d.rule, d.fitted_on.rows) == (objective, rule, len(data.sides["val"]))
    results = json.loads((run / "results.json").read_text())
    assert results["decision"] == "most-probable" and list(results["rules"]) == list(d.rules())
    assert set(d.rules()) == set(RULES)  # 'bright' is binary: the threshold rules apply
    assert results["heads"] == results["rules"]["most-probable"]["heads"]
    assert [c["temperature"] for c in results["calibration"]["heads"].values()] == d.temperatures()
    assert results["calibration"]["bins"] == 15
