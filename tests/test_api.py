"""The Python API: the same checked options and results as the command line."""

from __future__ import annotations

import json

import pytest

import attrfit

TINY = dict(size="16x16", width=8, stages=2, batch_size=16, lr=0.05, precision="fp32", report=False, threads=1)


def test_train_then_evaluate_gives_the_results_file(tiny, tmp_path):
    run = attrfit.train(tiny, run_dir=tmp_path / "r", epochs=2, progress=False, **TINY)
    saved = json.loads((run / "results.json").read_text())
    again = attrfit.evaluate(run, progress=False, device="cpu")  # the run's own decision rule, from its objective
    assert again.decision == "prior-corrected" and saved["decision"] == "most-probable"
    assert again.mean.accuracy == pytest.approx(saved["rules"]["prior-corrected"]["mean"]["accuracy"])
    assert again.to_json()["heads"] == saved["rules"]["prior-corrected"]["heads"]
    plain = attrfit.evaluate(run, progress=False, device="cpu", decide="most-probable")
    assert plain.to_json()["heads"] == saved["heads"]  # results.json's heads: the most probable class, as always
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


@pytest.fixture(scope="module")
def api_run(tmp_path_factory) -> tuple:
    from helpers import write_tiny

    root = tmp_path_factory.mktemp("api")
    csv_path = write_tiny(root / "data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATTRFIT_CACHE_DIR", str(root / "cache"))
        return attrfit.train(csv_path, run_dir=root / "r", epochs=1, progress=False, **TINY), csv_path


@pytest.mark.parametrize("call, needle", [
    (lambda run, csv: attrfit.evaluate(run, side="bogus", progress=False), "side 'bogus' is not one of"),
    (lambda run, csv: attrfit.evaluate(42, progress=False), "must be a path"),
    (lambda run, csv: attrfit.evaluate(run, tta="yes", progress=False), "tta must be True, False or None"),
    (lambda run, csv: attrfit.evaluate(run, csv=5, progress=False), "csv must be a path"),
    (lambda run, csv: attrfit.evaluate(run, device=0, progress=False), "device must be a name"),
    (lambda run, csv: attrfit.load(42), "must be a path"),
    (lambda run, csv: attrfit.load(run, device=3), "device must be a name"),
    (lambda run, csv: attrfit.load(run, compile="no"), "compile must be True or False"),
    (lambda run, csv: attrfit.load(run).predict(None), "cannot predict a NoneType"),
    (lambda run, csv: attrfit.load(run).predict(7), "cannot predict a int"),
    (lambda run, csv: attrfit.load(run).predict([], batch_size="4"), "batch_size must be a whole number"),
    (lambda run, csv: attrfit.train(csv, run_dir=5), "run_dir must be a path"),
    (lambda run, csv: attrfit.train(resume=5), "resume must be a path"),
    (lambda run, csv: attrfit.train(7), "csv must be a path"),
    (lambda run, csv: attrfit.train(csv, config=3), "must be a path"),
    (lambda run, csv: attrfit.train(csv, resume=run), "give nothing else"),
    (lambda run, csv: attrfit.find_lr(csv, steps="5"), "steps must be a whole number"),
    (lambda run, csv: attrfit.find_lr(csv, min_lr="1e-6"), "min_lr must be a number"),
    (lambda run, csv: attrfit.find_lr(csv, out=5), "out must be a path"),
])
def test_wrong_arguments_are_one_clear_error(api_run, call, needle):
    """The API checks its arguments as the command line does: one AttrfitError, never a raw TypeError/KeyError."""
    run, csv = api_run
    with pytest.raises(attrfit.AttrfitError, match=needle.replace("(", r"\(")):
        call(run, csv)


def test_find_lr_out_follows_the_output_policy(api_run, tmp_path):
    """The API's --out is checked as the command's: never a run's folder, no existing file without force."""
    run, csv = api_run
    for where, needle in ((run, "run folder"), (run / "lr_find", "run folder")):
        with pytest.raises(attrfit.AttrfitError, match=needle):
            attrfit.find_lr(csv, out=where, steps=16, repeats=1, progress=False)
    (tmp_path / "lr").mkdir()
    (tmp_path / "lr" / "lr_find.json").write_text("mine")
    with pytest.raises(attrfit.AttrfitError, match="already exists"):
        attrfit.find_lr(csv, out=tmp_path / "lr", steps=16, repeats=1, progress=False)
    assert (tmp_path / "lr" / "lr_find.json").read_text() == "mine"
