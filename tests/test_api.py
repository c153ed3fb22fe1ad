"""The Python API: the same checked options and results as the command line."""

from __future__ import annotations

import json

import pytest

import attrfit

TINY = dict(size="16x16", width=8, stages=2, batch_size=16, lr=0.05, precision="fp32", report=False, threads=1)


def test_train_then_evaluate_gives_the_results_file(tiny, tmp_path):
    run = attrfit.train(tiny, run_dir=tmp_path / "r", epochs=2, progress=False, **TINY)
    saved = json.loads((run / "results.json").read_text())
    again = attrfit.evaluate(run, progress=False, device="cpu")
    assert again.mean.accuracy == pytest.approx(saved["mean"]["accuracy"])
    assert again.to_json()["heads"] == saved["heads"]
    assert json.loads((run / "config.json").read_text())["epochs"] == 2


def test_options_are_checked_as_on_the_command_line(tiny, tmp_path):
    with pytest.raises(attrfit.AttrfitError, match="batch-size"):
        attrfit.train(tiny, run_dir=tmp_path / "r", **{**TINY, "batch_size": 1})
    with pytest.raises(attrfit.AttrfitError, match="unknown config key 'epoch'"):
        attrfit.train(tiny, run_dir=tmp_path / "r", epoch=3)
    assert not (tmp_path / "r").exists()


def test_find_lr_returns_the_suggestions(tiny, tmp_path):
    r = attrfit.find_lr(tiny, out=tmp_path / "lr", steps=16, repeats=1, min_lr=1e-4, max_lr=1.0, progress=False,
                        **{k: v for k, v in TINY.items() if k not in ("lr", "report")})
    assert r["onecycle_max_lr"] > 0 and (tmp_path / "lr" / "lr_find.json").is_file()
