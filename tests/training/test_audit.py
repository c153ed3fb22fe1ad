"""attrfit audit-labels: cross-fitted probabilities, cleanlab's suspects, and the outputs."""

import csv
import hashlib
import json
import re
import sys

import numpy as np
import pytest
import torch
from helpers import PLAIN_RECIPE, write_tiny

import attrfit.cli.audit
from attrfit.training import audit, audit_outputs

from attrfit import cli as cli
from attrfit.recipe.config import TrainConfig, apply, from_dict
from attrfit.data.load import load_data
from attrfit.core.errors import AttrfitError
from attrfit.data.schema import Schema

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TINY = {"size": "16x16", "width": 8, "stages": 2, "epochs": 3, "batch_size": 16, "lr": 0.05, "precision": "fp32",
        "eval_batch_size": 64}


def tiny_cfg(csv_path, **extra):
    return apply(TrainConfig(), {**PLAIN_RECIPE, **TINY, **extra, "data.csv": str(csv_path)})


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flip_colors(csv_path, rows: list[int]) -> None:
    """Give ``rows`` a wrong 'color' (the next class): label errors whose truth is known."""
    table = list(csv.DictReader(open(csv_path, newline="")))
    order = ["blue", "green", "red"]
    for i in rows:
        table[i]["color"] = order[(order.index(table[i]["color"]) + 1) % 3]
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)


# ---------------------------------------------------------------- folds

def test_folds_keep_groups_together_cover_every_row_and_balance():
    rng = np.random.default_rng(1)
    groups = [f"p{g}" for g in rng.integers(0, 40, 300)]
    f = audit.fold_ids(groups, 300, 4, seed=3)
    assert set(f.tolist()) == {0, 1, 2, 3}
    for g in set(groups):
        assert len({int(f[i]) for i, x in enumerate(groups) if x == g}) == 1
    sizes = np.bincount(f)
    assert sizes.max() - sizes.min() <= max(np.unique(groups, return_counts=True)[1])  # at most one group apart
    assert (audit.fold_ids(groups, 300, 4, seed=3) == f).all()
    assert (audit.fold_ids(groups, 300, 4, seed=4) != f).any()
    assert np.bincount(audit.fold_ids(None, 10, 5)).tolist() == [2] * 5


def test_folds_refuse_a_k_the_rows_cannot_fill():
    with pytest.raises(AttrfitError, match=r"--folds 4: needs 2 to 3 \(the audited groups\)"):
        audit.fold_ids(["a", "b", "c", "a"], 4, 4)
    with pytest.raises(AttrfitError, match="--folds 1"):
        audit.fold_ids(None, 10, 1)


# ---------------------------------------------------------------- cross-fitting

def test_each_row_is_predicted_by_a_model_that_never_trained_on_it(monkeypatch):
    calls = []

    def fake(cfg, schema, images, labels, train_idx, held_idx, show=False):
        calls.append((set(train_idx.tolist()), set(held_idx.tolist())))
        return [np.tile(held_idx[:, None].astype(np.float32), (1, k)) for k in schema.num_classes]

    monkeypatch.setattr(audit, "train_fold", fake)
    folds = audit.fold_ids(None, 20, 4)
    schema = Schema(("a",), {"a": ("x", "y")})
    probs = audit.crossfit(TrainConfig(), schema, torch.zeros(20, 3, 8, 8, dtype=torch.uint8),
                           torch.zeros(20, 1, dtype=torch.int64), folds)
    assert len(calls) == 4
    for train, held in calls:
        assert not train & held and train | held == set(range(20))
    assert sorted(i for _, held in calls for i in held) == list(range(20))  # each row held out exactly once
    assert (probs[0][:, 0] == np.arange(20)).all()  # each row got its own fold's prediction


@pytest.mark.parametrize("tta", [False, True])
def test_held_out_rows_are_scored_as_the_run_scores_them(tmp_path, monkeypatch, tta):
    """--tta (mirror averaging) applies to the out-of-fold probabilities as to a run's validation."""
    import attrfit.evaluation.scoring as scoring

    seen, real = [], scoring.predict_probs
    monkeypatch.setattr(scoring, "predict_probs", lambda *a, **k: seen.append(k.get("tta")) or real(*a, **k))
    cfg = tiny_cfg(write_tiny(tmp_path / "data", n=30), epochs=1, tta=tta)
    data = load_data(cfg.data, progress=False)
    audit.audit_data(data, cfg, folds=2)
    assert seen == [tta, tta]


def test_the_test_side_is_never_read(tmp_path):
    """Scrambling the test side's images and labels changes nothing; no test row is audited."""
    csv_path = write_tiny(tmp_path / "data", n=60)
    cfg = tiny_cfg(csv_path, epochs=2)
    data = load_data(cfg.data, progress=False)
    first = audit.audit_data(data, cfg, folds=2)
    test = data.sides["test"]
    assert len(test) > 0
    test_paths = {data.image_paths[int(r)] for r in test}
    assert not test_paths & set(first.paths)
    assert sorted(first.sides) == sorted(["train"] * len(data.sides["train"]) + ["val"] * len(data.sides["val"]))
    data.images[test] = torch.randint(0, 256, data.images[test].shape, dtype=torch.uint8)
    data.labels[test] = (data.labels[test] + 1) % 2
    again = audit.audit_data(data, cfg, folds=2)
    for p, q in zip(first.probs, again.probs):
        assert np.array_equal(p, q)
    assert first.suspects == again.suspects


# ---------------------------------------------------------------- suspects

def test_suspects_are_confidently_contradicted_labels_ranked_by_self_confidence():
    rng = np.random.default_rng(0)
    n, flipped = 200, [5, 17, 40, 111, 150]
    truth = rng.integers(0, 3, n)
    probs = np.full((n, 3), 0.05, np.float32)
    probs[np.arange(n), truth] = 0.9
    given = truth.copy()
    given[flipped] = (truth[flipped] + 1) % 3
    probs[5] = [0.4, 0.3, 0.3]  # row 5's model is unsure: its flip is the least suspect
    probs[5, truth[5]], probs[5, given[5]] = 0.45, 0.35
    labels = np.stack([given, np.where(np.arange(n) % 2 == 0, -1, truth)], 1)  # head b: half missing, all right
    schema = Schema(("a", "b"), {"a": ("x", "y", "z"), "b": ("x", "y", "z")})
    found = audit.find_suspects([probs, probs], labels, schema)
    a = found["a"]
    assert {s.row for s in a} <= set(flipped) and {17, 40, 111, 150} <= {s.row for s in a}
    assert [s.rank for s in a] == list(range(1, len(a) + 1))
    assert [s.score for s in a] == sorted(s.score for s in a)
    assert a[0].score == pytest.approx(0.05) and a[-1].row in (5, 150, 111, 40, 17)
    for s in a:
        assert s.given == "xyz"[given[s.row]] and s.suggested == "xyz"[truth[s.row]]
    assert found["b"] == []


def test_a_missing_cleanlab_is_one_clear_error(tiny, monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "cleanlab", None)
    monkeypatch.setitem(sys.modules, "cleanlab.count", None)
    out = tmp_path / "issues.csv"
    assert cli.main(["audit-labels", str(tiny), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("attrfit: error: audit-labels needs cleanlab")
    assert "attrfit[audit]" in err[0]
    assert not out.exists() and not out.with_suffix(".html").exists()


# ---------------------------------------------------------------- the command

def test_audit_recovers_flipped_labels(tmp_path):
    """Five 'color' labels flipped on an easy head: the out-of-fold model sees the true colour, cleanlab flags them."""
    csv_path = write_tiny(tmp_path / "data", n=90)
    flipped = [10, 25, 47, 62, 80]
    flip_colors(csv_path, flipped)
    cfg = tiny_cfg(csv_path, epochs=6, lr=0.1, width=16)
    result = audit.audit_labels(cfg, folds=3)
    truth = {f"img/{i}.png" for i in flipped} & set(result.paths)  # flips on the audited sides
    found = {result.paths[s.row] for s in result.suspects["color"]}
    assert len(truth) == 5 and found <= truth and len(found) >= 4  # precision 1, recall >= 0.8
    for s in result.suspects["color"]:
        assert s.suggested == write_tiny_color(int(re.search(r"(\d+)", result.paths[s.row]).group(1)))
    oof = result.probs[0].argmax(1)
    assert (oof == result.labels[:, 0]).mean() >= 0.9  # out of fold, yet it learned the task
    assert audit_outputs.oof_accuracy(result, 0) == pytest.approx((oof == result.labels[:, 0]).mean())
    bright = result.labels[:, 1] >= 0
    assert audit_outputs.oof_accuracy(result, 1) == pytest.approx((result.probs[1].argmax(1) == result.labels[:, 1])[bright].mean())


def write_tiny_color(i: int) -> str:
    return ["blue", "green", "red"][i % 3]  # write_tiny's true colour of row i


def test_cli_writes_the_suspects_csv_and_gallery_and_leaves_the_csv_alone(tmp_path, capsys, monkeypatch):
    csv_path = write_tiny(tmp_path / "data", n=90)
    flipped = [10, 25, 47, 62, 80]
    flip_colors(csv_path, flipped)
    before, split_file = digest(csv_path), csv_path.with_suffix(".split.json")
    monkeypatch.chdir(tmp_path)
    # 16 steps per fold: the trained weights themselves, as the other tests' plain recipe (an average of so few
    # steps flags an unflipped image now and then)
    (tmp_path / "plain.toml").write_text("[optim]\nema = 0.0\n", encoding="utf-8")
    args = ["audit-labels", str(csv_path), "--size", "16x16", "--folds", "3", "--epochs", "4", "--lr", "0.05",
            "--batch-size", "16", "--precision", "fp32", "--quiet", "--config", str(tmp_path / "plain.toml")]
    assert cli.main(args) == 0
    assert digest(csv_path) == before and split_file.is_file()  # the split is made once, like train's
    out = tmp_path / "labels_label_issues.csv"
    rows = list(csv.DictReader(open(out, newline="")))
    assert list(rows[0]) == list(audit_outputs.CSV_COLUMNS)
    color = [r for r in rows if r["head"] == "color"]
    found = {r["image_path"] for r in color}
    assert found and found <= {f"img/{i}.png" for i in flipped}
    assert all(r["given_label"] != r["suggested_label"] and r["side"] in ("train", "val") for r in rows)
    assert [int(r["rank"]) for r in color] == list(range(1, len(color) + 1))
    assert [float(r["score"]) for r in color] == sorted(float(r["score"]) for r in color)
    page = (tmp_path / "labels_label_issues.html").read_text(encoding="utf-8")
    per_head = [sum(r["head"] == h for r in rows) for h in ("color", "bright")]
    assert len(re.findall(r'<img src="data:image/jpeg;base64,', page)) == sum(min(n, audit_outputs.GALLERY_PER_HEAD)
                                                                             for n in per_head)
    assert "the test side is not read" in page
    assert "suspects: labels_label_issues.csv" in capsys.readouterr().out
    assert cli.main(args) == 2  # a second run does not replace them without --force
    assert "already exists; pass --force" in capsys.readouterr().err
    assert cli.main([*args, "--force"]) == 0


def test_outputs_are_checked_before_the_work(tiny, tmp_path, capsys):
    existing = tmp_path / "old.csv"
    existing.write_text("keep me\n")
    base = ["audit-labels", str(tiny), "--size", "16x16", "--quiet"]
    assert cli.main([*base, "--out", str(existing)]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err and existing.read_text() == "keep me\n"
    assert cli.main([*base, "--out", str(tiny), "--force"]) == 2  # the input itself, even with --force
    assert "never replaced" in capsys.readouterr().err
    assert cli.main([*base, "--out", str(tmp_path / "a.csv"), "--html", str(tmp_path / "a.csv")]) == 2
    assert "same file" in capsys.readouterr().err
    assert cli.main([*base, "--out", str(tmp_path / "b.csv"), "--lr", "auto"]) == 2
    assert not (tmp_path / "b.csv").exists()


def test_lr_auto_is_refused(tiny):
    with pytest.raises(AttrfitError, match="needs a number for --lr"):
        audit.check_config(tiny_cfg(tiny, lr="auto"))


def test_training_options_come_from_flags_over_a_config_file_over_the_audit_defaults(tiny, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(attrfit.cli.audit, "audit_labels", lambda cfg, folds, progress: seen.append((cfg, folds)) or 1 / 0)
    toml = tmp_path / "audit.toml"
    toml.write_text("epochs = 30\n[augment]\ncutout = 0.25\n[optim]\nlr = 0.3\n")
    base = ["audit-labels", str(tiny), "--size", "16x16", "--out", str(tmp_path / "o.csv")]
    for extra in ([], ["--config", str(toml)], ["--config", str(toml), "--epochs", "5", "--folds", "3"]):
        with pytest.raises(ZeroDivisionError):
            cli.main([*base, *extra])
    (plain, k1), (filed, _), (flagged, k3) = seen
    assert (plain.epochs, plain.augment.cutout, k1) == (audit.AUDIT_DEFAULTS["epochs"], 0.0, 4)
    assert (plain.optim.class_weights, plain.optim.ema, plain.optim.lr) == (False, 0.0, audit.AUDIT_DEFAULTS["lr"])
    assert (filed.epochs, filed.augment.cutout, filed.optim.lr) == (30, 0.25, 0.3)
    assert (flagged.epochs, flagged.augment.cutout, k3) == (5, 0.25, 3)
    assert flagged.data.csv == str(tiny) and flagged.data.size == "16x16"


# ---------------------------------------------------------------- a head the out-of-fold model cannot judge

def fake_folds(monkeypatch, probs_of):
    """Replace each fold's training: ``probs_of(schema, labels of the held rows)`` gives its probabilities."""
    def fake(cfg, schema, images, labels, train_idx, held_idx, show=False):
        return probs_of(schema, labels[torch.from_numpy(held_idx)].numpy())

    monkeypatch.setattr(audit, "train_fold", fake)


def test_an_audit_whose_out_of_fold_model_is_at_chance_reports_no_suspects_for_that_head(tmp_path, monkeypatch):
    """'color': the same probabilities for every image (a model that learned nothing: balanced accuracy exactly
    chance); 'bright': right and confident but for every fifth row, whose label it contradicts."""
    def probs_of(schema, held):
        color = np.tile(np.float32([0.5, 0.3, 0.2]), (len(held), 1))
        truth = np.where(held[:, 1] < 0, 0, held[:, 1])
        contradicted = np.where(np.arange(len(held)) % 5 == 0, 1 - truth, truth)
        bright = np.where(contradicted[:, None] == np.arange(2), 0.95, 0.05).astype(np.float32)
        return [color, bright]

    fake_folds(monkeypatch, probs_of)
    cfg = tiny_cfg(write_tiny(tmp_path / "data", n=90))
    result = audit.audit_data(load_data(cfg.data, progress=False), cfg, folds=3)
    color, bright = result.trust["color"], result.trust["bright"]
    assert color.balanced_accuracy == pytest.approx(1 / 3) and color.chance == pytest.approx(1 / 3)
    assert not color.can_judge and result.suspects["color"] == []
    ungated = audit.find_suspects(result.probs, result.labels, result.schema)
    assert ungated["color"], "without the rule, cleanlab would list the model's own mistakes as suspects"
    assert bright.can_judge and result.suspects["bright"]
    assert "color: cannot judge its labels (no suspects)" in audit_outputs.summary(result)
    assert "cannot judge these labels" in audit_outputs.gallery_html(result)


def test_the_audits_folds_keep_each_group_of_the_group_column_together(tiny_groups, monkeypatch):
    """--group-column reaches the folds the audit really uses (not only the fold helper)."""
    fake_folds(monkeypatch, lambda schema, held: [np.full((len(held), k), 1 / k, np.float32)
                                                  for k in schema.num_classes])
    cfg = tiny_cfg(tiny_groups, **{"data.group_column": "pid"})
    data = load_data(cfg.data, progress=False)
    result = audit.audit_data(data, cfg, folds=4)
    group_of = dict(zip(data.table.paths, data.table.groups))
    folds_of_group = {}
    for path, fold in zip(result.paths, result.folds):
        folds_of_group.setdefault(group_of[path], set()).add(int(fold))
    assert len(folds_of_group) > 4 and all(len(f) == 1 for f in folds_of_group.values())


def test_like_takes_the_recipe_and_length_of_a_run(trained_tiny, tiny, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(attrfit.cli.audit, "audit_labels", lambda cfg, folds, progress: seen.append(cfg) or 1 / 0)
    run, _ = trained_tiny
    base = ["audit-labels", str(tiny), "--size", "16x16", "--out", str(tmp_path / "o.csv"), "--like", str(run)]
    for extra in ([], ["--epochs", "7"]):
        with pytest.raises(ZeroDivisionError):
            cli.main([*base, *extra])
    like, flagged = seen
    trained = from_dict(json.loads((run / "config.json").read_text()))
    assert (like.epochs, like.model, like.optim) == (trained.epochs, trained.model, trained.optim)
    assert flagged.epochs == 7 and like.data.csv == str(tiny)
    with pytest.raises(AttrfitError, match="no config.json there"):
        attrfit.cli.audit.like_run(str(tmp_path))
