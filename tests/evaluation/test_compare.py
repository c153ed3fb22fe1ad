"""attrfit compare (paired bootstrap on the same test images) and attrfit runs (listing run folders)."""

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import write_tiny

from attrfit import cli
from attrfit.evaluation.bootstrap import bootstrap_p, head_scores, holm, resample_indices
from attrfit.evaluation.scoring import score_checkpoint
from attrfit.evaluation.compare import Loaded, compare_rows, compare_runs
from attrfit.evaluation.compare_page import format_comparison
from attrfit.recipe.config import TrainConfig, apply
from attrfit.core.errors import AttrfitError
from attrfit.evaluation.metrics import head_metrics
from attrfit.core import runs as runs_mod
from attrfit.data.schema import Schema
from attrfit.training.loop import fit

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

BASE = {"size": "16x16", "width": 8, "stages": 2, "epochs": 2, "batch_size": 16, "lr": 0.05, "report": False,
        "precision": "fp32"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs A and B (cutout differs) on one split, and C on another split of the same CSV."""
    root = tmp_path_factory.mktemp("compare")
    csv_path = write_tiny(root / "data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATTRFIT_CACHE_DIR", str(root / "cache"))

        def train(name, **over):
            cfg = apply(TrainConfig(), {**BASE, "data.csv": str(csv_path), **over})
            return fit(cfg, run_dir=root / "runs" / name, progress=False)

        a = train("a")
        b = train("b", cutout=0.25)
        c = train("c", epochs=1, split=str(root / "data" / "other.split.json"), split_seed=1)
        yield SimpleNamespace(root=root, a=a, b=b, c=c, cache=root / "cache")


@pytest.fixture
def cache(runs, monkeypatch):
    monkeypatch.setenv("ATTRFIT_CACHE_DIR", str(runs.cache))


def test_head_scores_agree_with_head_metrics():
    rng = np.random.default_rng(0)
    target = rng.integers(-1, 3, 200)
    pred = np.where(rng.random(200) < 0.6, np.maximum(target, 0), rng.integers(0, 3, 200))
    s = head_scores(target, pred == target, 3, np.arange(200)[None])
    m = head_metrics(pred, target, 3, 0)
    assert s["accuracy"][0] == pytest.approx(m.accuracy)
    assert s["balanced_accuracy"][0] == pytest.approx(m.balanced_accuracy)


def test_holm_and_bootstrap_p_by_hand():
    assert holm([0.01, 0.04, 0.03]) == [0.03, 0.06, 0.06]
    assert holm([0.02, float("nan")])[0] == 0.02  # NaN is no test
    assert bootstrap_p(np.zeros(50)) == 1.0
    assert bootstrap_p(np.full(99, 0.1)) == pytest.approx(2 / 100)
    assert bootstrap_p(np.full(99, -0.1)) == pytest.approx(2 / 100)


def fake(name, preds, labels, classes=("x", "y")):
    schema = Schema(tuple(f"h{j}" for j in range(labels.shape[1])), {f"h{j}": classes for j in range(labels.shape[1])})
    probs = [np.eye(len(classes))[preds[:, j]] for j in range(labels.shape[1])]
    scored = SimpleNamespace(schema=schema, labels=labels, probs=probs, paths=[], predicted=lambda j: probs[j].argmax(1))
    return Loaded(name, scored, [], None, None)


def test_paired_bootstrap_sees_a_small_consistent_gain_that_unpaired_would_miss():
    n = 300
    labels = (np.arange(n) % 2)[:, None]
    a = labels.copy()
    a[:90, 0] = 1 - a[:90, 0]  # A wrong on 90 images (accuracy 0.70)
    b = a.copy()
    b[:18, 0] = labels[:18, 0]  # B fixes 18 of them and breaks none (0.76)
    rows = compare_rows([fake("A", a, labels), fake("B", b, labels)], n_boot=2000, seed=0)
    acc = next(r for r in rows if r.metric == "accuracy" and r.name == "h0")
    d = acc.diffs[1]
    assert d.value == pytest.approx(0.06)
    assert d.ci[0] > 0 and d.verdict == "better"
    # resampling the two runs independently (unpaired) gives an interval that contains 0
    i, j = resample_indices(n, 2000, 1), resample_indices(n, 2000, 2)
    unpaired = (b[:, 0] == labels[:, 0])[j].mean(1) - (a[:, 0] == labels[:, 0])[i].mean(1)
    assert np.quantile(unpaired, 0.025) < 0 < np.quantile(unpaired, 0.975)


def test_per_head_verdicts_are_holm_corrected_and_worse_is_reported():
    n, heads = 200, 3
    labels = np.tile((np.arange(n) % 2)[:, None], (1, heads))
    a = labels.copy()
    b = labels.copy()
    b[:60, 0] = 1 - b[:60, 0]  # B clearly worse on h0, equal elsewhere
    rows = compare_rows([fake("A", a, labels), fake("B", b, labels)], n_boot=1000, seed=0)
    acc = [r for r in rows if r.metric == "accuracy"]
    assert [r.name for r in acc] == ["h0", "h1", "h2", "MEAN"]
    assert acc[0].diffs[1].verdict == "worse"
    assert [r.diffs[1].verdict for r in acc[1:3]] == ["no detectable difference"] * 2
    assert [r.diffs[1].p_holm for r in acc[:3]] == holm([r.diffs[1].p for r in acc[:3]])
    assert acc[3].summary and acc[3].diffs[1].p_holm is None
    assert acc[3].values == pytest.approx([1.0, (0.7 + 1 + 1) / 3])


def test_binary_tables_get_instance_rows():
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]] * 10)
    rows = compare_rows([fake("A", labels, labels, ("0", "1")), fake("B", 1 - labels, labels, ("0", "1"))], 500, 0)
    inst = {r.name: r for r in rows if r.metric == "binary attributes"}
    assert set(inst) == {"instance accuracy", "instance precision", "instance recall", "instance f1"}
    assert inst["instance accuracy"].values[0] == pytest.approx(0.75)  # 1 in 4 images has no positive: 0
    assert inst["instance accuracy"].values[1] == 0.0 and inst["instance f1"].diffs[1].verdict == "worse"


def test_compare_real_runs(runs, cache):
    c = compare_runs([runs.a, runs.b], n_boot=500)
    assert c.rule == "prior-corrected"  # run A's own rule (the default objective's), for both runs
    results = [json.loads((r / "results.json").read_text()) for r in (runs.a, runs.b)]
    same_rule = [r["rules"][c.rule] for r in results]
    mean = next(r for r in c.rows if r.metric == "accuracy" and r.name == "MEAN")
    assert mean.values == pytest.approx([r["mean"]["accuracy"] for r in same_rule])
    assert mean.diffs[1].value == pytest.approx(mean.values[1] - mean.values[0])
    bal = next(r for r in c.rows if r.metric == "balanced_accuracy" and r.name == "color")
    assert bal.values == pytest.approx([r["heads"]["color"]["balanced_accuracy"] for r in same_rule])
    plain = compare_runs([runs.a, runs.b], n_boot=500, decide="most-probable")
    mean = next(r for r in plain.rows if r.metric == "accuracy" and r.name == "MEAN")
    assert mean.values == pytest.approx([r["mean"]["accuracy"] for r in results])  # results.json's own numbers
    assert c.config_diff == [("augment.cutout", [0.0, 0.25])]
    assert c.runs[1].wall_s == pytest.approx(results[1]["wall_time_s"])
    assert c.n_images == results[0]["heads"]["color"]["n"]
    text = format_comparison(c)
    assert "augment.cutout" in text and "Holm" in text and "B-A" in text


def test_runs_of_different_objectives_are_compared_under_one_rule(runs, cache, tmp_path):
    """B's own rule is the most probable class (as an accuracy-objective run's is); compared with A, B is scored
    under A's rule with its own fitted decisions (here a strong correction of a skewed prior), not under its own."""
    b = shutil.copytree(runs.b, tmp_path / "b")
    d = json.loads((b / "decisions.json").read_text())
    d["heads"]["color"]["prior"] = [0.9, 0.05, 0.05]
    (b / "decisions.json").write_text(json.dumps({**d, "objective": "accuracy", "rule": "most-probable",
                                                  "strength": 2.0}))
    c = compare_runs([runs.a, b], n_boot=200)
    assert c.rule == "prior-corrected" and "decision rule prior-corrected" in format_comparison(c)
    own = {rule: score_checkpoint(str(b), "test", progress=False, decide=rule).results.heads["color"]
           for rule in ("prior-corrected", "most-probable")}
    assert own["prior-corrected"].accuracy != own["most-probable"].accuracy  # the rules answer differently here
    color = next(r for r in c.rows if r.metric == "accuracy" and r.name == "color")
    assert color.values[1] == pytest.approx(own["prior-corrected"].accuracy)
    assert compare_runs([b, runs.a], n_boot=200).rule == "most-probable"  # the first run's own rule


def test_a_run_against_its_copy_shows_no_difference(runs, cache, tmp_path):
    copy = shutil.copytree(runs.a, tmp_path / "a_copy")
    c = compare_runs([runs.a, copy], n_boot=200)
    assert c.config_diff == []
    for r in c.rows:
        d = r.diffs[1]
        assert d.value == 0 and d.ci == (0.0, 0.0) and d.verdict == "no detectable difference"


def test_different_splits_are_refused_with_what_to_do(runs, cache, capsys):
    with pytest.raises(AttrfitError, match="different splits.*cannot be compared image by image.*same split"):
        compare_runs([runs.a, runs.c])
    assert cli.main(["compare", str(runs.a), str(runs.c)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("attrfit: error: the runs were trained on different splits")


def test_compare_needs_two_distinct_runs(runs, cache):
    with pytest.raises(AttrfitError, match="at least two"):
        compare_runs([runs.a])
    with pytest.raises(AttrfitError, match="named twice"):
        compare_runs([runs.a, runs.a])


def test_cli_json_and_html(runs, cache, tmp_path, capsys):
    out = tmp_path / "cmp.html"
    assert cli.main(["compare", str(runs.a), str(runs.b), "--json", "--n-boot", "300", "--html", str(out)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in d["runs"]] == ["A", "B"]
    assert d["config_diff"] == [{"key": "augment.cutout", "values": [0.0, 0.25]}]
    row = d["rows"][0]
    assert row["diffs"][0] is None and set(row["diffs"][1]) == {"value", "ci", "p", "p_holm", "verdict"}
    page = out.read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == 1
    assert "<h2>Settings that differ</h2>" in page and "augment.cutout" in page and "verdict" in page
    assert not list(tmp_path.glob(".*.tmp"))


def test_compare_names_the_weights_it_scores(runs, cache, capsys):
    """A checkpoint file is labelled by its own name and epoch, not as the run's best epoch."""
    assert cli.main(["compare", str(runs.a), str(runs.a / "last.pt"), "--n-boot", "200"]) == 0
    text = capsys.readouterr().out
    best = runs_mod.read_json(runs.a / "results.json")["best_epoch"]
    assert f"best epoch {best} of 2" in text and "last.pt, epoch 2 of 2" in text
    c = compare_runs([runs.a, runs.a / "last.pt"], n_boot=200)
    assert [(r.checkpoint, r.epoch) for r in c.runs] == [("best.pt", best), ("last.pt", 2)]


def test_compare_refuses_one_checkpoint_named_twice(runs, cache, capsys):
    for pair in ((runs.a, runs.a), (runs.a, runs.a / "best.pt"), (runs.a / "best.pt", runs.a / "." / "best.pt")):
        assert cli.main(["compare", *map(str, pair)]) == 2
        err = capsys.readouterr().err
        assert err.count("attrfit: error:") == 1 and "named twice" in err


def test_html_never_replaces_a_run_file_and_needs_force_for_others(runs, cache, tmp_path, capsys):
    before = (runs.a / "results.json").read_bytes()
    code = cli.main(["compare", str(runs.a), str(runs.b), "--html", str(runs.a / "results.json"), "--force"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("attrfit: error:") == 1 and "never" in err
    assert (runs.a / "results.json").read_bytes() == before
    other = tmp_path / "old.html"
    other.write_text("keep me")
    assert cli.main(["compare", str(runs.a), str(runs.b), "--html", str(other)]) == 2
    assert "--force" in capsys.readouterr().err and other.read_text() == "keep me"
