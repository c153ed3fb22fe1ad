"""Options, the command line and the end-of-run report at their edges.

Every bad option value ends in one ``attrfit: error:`` line (exit 2) before any file is
written or data read; a head without labelled test rows shows 'n/a' everywhere; a report
stays bounded for any number of classes and heads.
"""

import csv
import dataclasses
import json
import math
import re
import struct

import numpy as np
import pytest

from attrfit.evaluation import report
from attrfit.evaluation import figures
from attrfit.cli.app import build_parser, main
from attrfit.recipe.config import TrainConfig, apply, leaf_fields, load_file
from attrfit.core.errors import AttrfitError
from attrfit.evaluation.results import Results
from attrfit.evaluation.scoring import format_table
from attrfit.core.options import flag_of

TINY_RUN = ["--size", "16x16", "--width", "8", "--stages", "2", "--epochs", "1", "--batch-size", "16",
            "--precision", "fp32", "--quiet"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(code, err):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attrfit: error:") and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------- range checks at parse time

BAD = [
    ("--batch-size", "1", "BatchNorm"), ("--eval-batch-size", "0", ">= 1"), ("--threads", "-1", "[0, 4096]"),
    ("--label-smoothing", "2", "[0, 1)"), ("--momentum", "-0.1", "[0, 1)"), ("--device", "foo", "cuda:N"),
    ("--device", "cuda:x", "cuda:N"), ("--seed", "-1", "[0, "), ("--split-seed", "-3", "[0, "),
    ("--lr", "nan", "finite"), ("--lr", "-1", "(0, 100]"), ("--lr", "0", "(0, 100]"), ("--lr", "1e9", "(0, 100]"),
    ("--lr", "fast", "'auto'"), ("--weight-decay", "-1", "[0, 1]"), ("--weight-decay", "inf", "finite"),
    ("--ema", "2", "[0, 1)"), ("--epochs", "0", ">= 1"), ("--grad-clip", "-1", "[0, "),
    ("--size", "0x0", "HxW"), ("--size", "99999x99999", "HxW"), ("--size", "big", "HxW"),
    ("--resize", "foo", "stretch, pad"), ("--cutout", "-1", "[0, "), ("--cutout-count", "-1", "[0, 64]"),
    ("--translate", "-1", "[0, 256]"), ("--brightness", "2", "[0, 1]"), ("--contrast", "-1", "[0, 1]"),
    ("--dropout", "1", "[0, 1)"), ("--width", "0", "[1, 1024]"), ("--stem-stride", "3", "1, 2"), ("--stem", "pyramid", "conv, patch"),
    ("--preset", "huge", "cpu-small"), ("--schedule", "cyclic", "onecycle"), ("--pct-start", "2", "[0, 1]"),
    ("--div-factor", "0", "[1, "), ("--warmup-steps", "-1", ">= 0"), ("--momentum-max", "1", "[0, 1)"),
    ("--momentum-min", "0.99", "must not exceed --momentum-max"), ("--monitor", "mean_acuracy", "did you mean"),
    ("--precision", "fp8", "bf16"), ("--optimizer", "adam", "did you mean 'adamw'"),
    ("--test-fraction", "0", "(0, 1)"), ("--val-fraction", "1", "[0, 1)"), ("--test-fraction", "0.6", "no rows"),
    ("--loss-weights", "color=-1", "every head"), ("--checkpoint-every", "-1", ">= 0"),
    ("--split", "", "empty value"), ("--heads", " ", "empty value"), ("--init-from", "nowhere", "no such"),
]


@pytest.mark.parametrize("flag, value, says", BAD, ids=[f"{f}={v}" for f, v, _ in BAD])
def test_train_rejects_out_of_range_before_touching_anything(capsys, tiny, tmp_path, flag, value, says):
    extra = ["--val-fraction", "0.5"] if flag == "--test-fraction" and value == "0.6" else []
    code, out, err = run(capsys, "train", tiny, flag, value, *extra, "--run-dir", tmp_path / "run")
    line = one_error_line(code, err)
    assert says in line and (flag in line or "argument" in line)
    # checked as the arguments are parsed: no run folder, no split file, no image cache
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()
    assert sorted(p.name for p in tiny.parent.iterdir()) == ["img", "labels.csv"]


@pytest.mark.parametrize("argv, says", [
    (["prepare", "{csv}", "--size", "0x0"], "--size"),
    (["prepare", "{csv}", "--resize", "foo"], "--resize"),
    (["prepare", "{csv}", "--heads", ""], "empty value"),
    (["split", "{csv}", "--test-fraction", "2"], "--test-fraction"),
    (["split", "{csv}", "--split-seed", "-1"], "--split-seed"),
    (["lr-find", "{csv}", "--lr", "0.1"], "not used by lr-find"),
    (["lr-find", "{csv}", "--epochs", "3"], "not used by lr-find"),
    (["lr-find", "{csv}", "--no-report"], "not used by lr-find"),
    (["lr-find", "{csv}", "--batch-size", "1"], "BatchNorm"),
    (["lr-find", "{csv}", "--max-lr", "inf"], "finite"),
    (["train", "{csv}", "--learning-rate", "0.1"], "unrecognized"),
    (["train", "{csv}", "--epoch-count=2"], "did you mean --epochs"),
    (["evaluate", "run", "--side", "foo"], "invalid choice"),
])
def test_other_commands_reject_bad_options_in_one_line(capsys, tiny, tmp_path, argv, says):
    code, out, err = run(capsys, *[a.replace("{csv}", str(tiny)) for a in argv], *(
        ["--out", tmp_path / "lr"] if argv[0] == "lr-find" else []))
    assert says in one_error_line(code, err)
    assert sorted(p.name for p in tiny.parent.iterdir()) == ["img", "labels.csv"]
    assert not (tmp_path / "lr").exists()


def test_demo_checks_options_before_writing_its_images(capsys, tmp_path):
    code, out, err = run(capsys, "demo", "--out", tmp_path / "demo", "--batch-size", "1")
    assert "BatchNorm" in one_error_line(code, err)
    assert not (tmp_path / "demo").exists()


def test_edge_values_inside_the_ranges_are_accepted():
    cfg = apply(TrainConfig(), {"lr": "auto", "momentum": 0, "label_smoothing": 0.99, "ema": 0.999, "batch_size": 2,
                                "threads": 0, "device": "cuda:1", "size": "8x4096", "resize": "pad"})
    assert cfg.optim.lr == "auto" and cfg.batch_size == 2 and cfg.data.size == "8x4096"
    assert apply(TrainConfig(), {"lr": 100}).optim.lr == 100.0


@pytest.mark.parametrize("text, says", [
    ("epochs = 1e400", "expected an integer"),
    ("lr = true", "expected a number"),
    ("device = true", "expected a string"),
    ("heads = 5", "expected a list"),
    ("loss_weights = {color = -1}", "every head"),
    ("[optim]\nlr = [1, 2]", "expected a number"),
    ("[data]\nsize = '64x64x3'", "HxW"),
])
def test_config_file_values_of_the_wrong_type(tmp_path, text, says):
    p = tmp_path / "c.toml"
    p.write_text(text + "\n")
    with pytest.raises(AttrfitError, match=re.escape(says)):
        apply(TrainConfig(), load_file(p), source=str(p))


def test_top_level_loss_weights_table_is_the_option(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("loss_weights = {color = 2}\n")
    assert apply(TrainConfig(), load_file(p)).optim.loss_weights == {"color": 2.0}


def test_api_configs_check_themselves():
    from attrfit.data.augment import AugmentConfig
    from attrfit.model.net import ModelConfig
    from attrfit.recipe.schedule import ScheduleConfig

    for make in (lambda: AugmentConfig(cutout=-1), lambda: ScheduleConfig(pct_start=2),
                 lambda: ModelConfig(dropout=1.0), lambda: ModelConfig(width=4096).resolved()):
        with pytest.raises(AttrfitError, match="config key"):
            make()


# ---------------------------------------------------------------- help text from one place

def test_every_option_has_a_sentence_a_placeholder_and_its_default(capsys):
    for key, (t, f) in leaf_fields().items():
        if flag_of(f) is None:
            continue
        help_ = f.metadata.get("help", "")
        assert len(help_.split()) >= 3 and help_ != key, key  # a sentence, not the key again
        if t is not bool:
            assert f.metadata.get("metavar") not in (None, "V"), key
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert " V " not in out and "V]" not in out
    assert "--lr LR|auto" in out and "--size HxW" in out and "--batch-size N" in out and "--init-from PATH" in out
    flags = [f for k, (_, f) in leaf_fields().items() if flag_of(f)]
    assert " ".join(out.split()).count("(default:") >= len(flags)


def test_split_and_train_share_one_help_sentence(capsys):
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    prepare = " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    train = " ".join(capsys.readouterr().out.split())
    sentence = " ".join(leaf_fields()["data.size"][1].metadata["help"].split())
    assert sentence in prepare and sentence in train


# ---------------------------------------------------------------- bare command, -v anywhere

def test_bare_attrfit_lists_the_commands(capsys):
    code, out, err = run(capsys)
    assert code == 2
    for name in ("demo-data", "split", "prepare", "train", "evaluate", "lr-find", "report", "predict", "export"):
        assert f"\n    {name} " in err
    assert err.strip().splitlines()[-1].startswith("attrfit: error:")
    assert sum(line.startswith("attrfit: error:") for line in err.splitlines()) == 1


def test_verbose_before_or_after_the_command():
    parser = build_parser()
    assert parser.parse_args(["-v", "split", "x.csv"]).verbose
    assert parser.parse_args(["split", "x.csv", "-v"]).verbose
    assert parser.parse_args(["train", "x.csv", "--verbose"]).verbose
    assert not parser.parse_args(["split", "x.csv"]).verbose


# ---------------------------------------------------------------- heads without labelled test rows

def test_format_table_shows_na_for_a_head_without_labels():
    nan = float("nan")
    results = {"heads": {"a": {"accuracy": 0.9, "balanced_accuracy": 0.8, "majority_accuracy": 0.5, "n": 10,
                               "pred_top_share": 0.5},
                         "b": {"accuracy": None, "balanced_accuracy": None, "majority_accuracy": None, "n": 0,
                               "pred_top_share": None},
                         "c": {"accuracy": nan, "balanced_accuracy": nan, "majority_accuracy": nan, "n": 0,
                               "pred_top_share": nan}},
               "mean": {"accuracy": 0.9, "balanced_accuracy": 0.8, "majority_accuracy": 0.5}}
    lines = format_table(Results.from_json(results)).splitlines()
    assert lines[2].split()[:6] == ["b", "n/a", "n/a", "n/a", "n/a", "0"]
    assert lines[3].split()[:6] == ["c", "n/a", "n/a", "n/a", "n/a", "0"]
    assert "b, c had no labelled rows" in lines[-1]
    empty = {"heads": {"b": results["heads"]["b"]}, "mean": dict.fromkeys(("accuracy", "balanced_accuracy",
                                                                           "majority_accuracy"))}
    assert format_table(Results.from_json(empty)).splitlines()[2].split()[:5] == ["MEAN", "n/a", "n/a", "n/a", "n/a"]


def _strict_json(path):
    def refuse(name):
        raise ValueError(f"{path} holds {name}: not valid JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


def _sparse_csv(capsys, tiny, tmp_path):
    """tiny plus a head 'rare' labelled only on some train rows of the split (none on val or test)."""
    split = tmp_path / "s.json"
    assert run(capsys, "split", tiny, "--out", split)[0] == 0
    train = set(json.loads(split.read_text())["sides"]["train"])
    rows = list(csv.DictReader(open(tiny)))
    for i, r in enumerate(rows):
        r["rare"] = ("x", "y")[i % 2] if r["image_path"] in train and i < 30 else ""
    sparse = tiny.with_name("sparse.csv")
    with open(sparse, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert run(capsys, "split", sparse, "--out", tmp_path / "s2.json")[0] == 0
    assert json.loads((tmp_path / "s2.json").read_text())["sides"] == json.loads(split.read_text())["sides"]
    return sparse, tmp_path / "s2.json"


def test_sparse_head_is_na_in_table_results_report_and_evaluate(capsys, tiny, tmp_path):
    sparse, split = _sparse_csv(capsys, tiny, tmp_path)
    code, out, err = run(capsys, "train", sparse, "--split", split, *TINY_RUN, "--run-dir", tmp_path / "r")
    assert code == 0, err
    rare = next(line for line in out.splitlines() if line.startswith("rare"))
    assert rare.split()[:6] == ["rare", "n/a", "n/a", "n/a", "n/a", "0"] and "no labelled rows" in out
    results = _strict_json(tmp_path / "r" / "results.json")  # null, never NaN
    assert results["heads"]["rare"]["accuracy"] is None and results["heads"]["rare"]["n"] == 0
    assert results["mean"]["accuracy"] == pytest.approx(
        np.mean([results["heads"][h]["accuracy"] for h in ("color", "bright")]))
    page = (tmp_path / "r" / "report.html").read_text()
    assert "rare had no labelled rows" in page and "No matrix for rare" in page
    assert not any("rare" in p.name for p in (tmp_path / "r" / "report_files").iterdir())
    code, out, err = run(capsys, "evaluate", tmp_path / "r")
    assert code == 0 and "rare" in out and "n/a" in out
    code, out, err = run(capsys, "evaluate", tmp_path / "r", "--json")
    assert code == 0 and json.loads(out, parse_constant=lambda c: 1 / 0)["heads"]["rare"]["accuracy"] is None


def test_no_labelled_val_rows_at_all_is_an_error():
    import torch

    from attrfit.training.sides import _check_val_labels

    with pytest.raises(AttrfitError, match="no head has a labelled row on the val side"):
        _check_val_labels(torch.full((5, 2), -1), ("a", "b"))
    _check_val_labels(torch.tensor([[0, -1], [1, -1]]), ("a", "b"))  # one head is enough (the other: a warning)


# ---------------------------------------------------------------- reports bounded for any K and any number of heads

def _png_size(data: bytes) -> tuple[int, int]:
    return struct.unpack(">II", data[16:24])  # IHDR width, height


def test_pool_classes_keeps_the_most_frequent_and_pools_the_rest():
    rng = np.random.default_rng(0)
    cm = rng.integers(0, 5, (300, 300))
    small, names = figures.pool_classes(cm, tuple(f"c{i}" for i in range(300)))
    assert small.shape == (21, 21) and small.sum() == cm.sum() and names[-1] == "other (280 classes)"
    support = cm.sum(1)
    assert small[:20].sum(1).tolist() == sorted(support, reverse=True)[:20]
    same, names3 = figures.pool_classes(np.eye(3, dtype=int), ("a", "b", "c"))
    assert names3 == ["a", "b", "c"] and (same == np.eye(3)).all()


def test_figures_stay_bounded_with_hundreds_of_classes_and_heads():
    k = 500
    cm = np.random.default_rng(0).integers(0, 3, (k, k))
    classes = tuple(f"a very long class name number {i:04d} that goes on" for i in range(k))
    w, h = _png_size(figures.png_bytes(figures.confusion_figure(cm, classes, "ident", "test")))
    assert w < 2000 and h < 2000
    heads = tuple(f"head{i}" for i in range(120))
    metrics = [{"epoch": str(e), **{f"train_loss_{x}": "1.0" for x in heads}} for e in (1, 2)]
    w, h = _png_size(figures.png_bytes(figures.accuracy_figure(metrics, heads, [2] * len(heads), 1)))
    assert w < 2000 and h < 2500
    w, h = _png_size(figures.png_bytes(figures.loss_figure(metrics, heads)))
    assert w < 2000 and h < 1000


def test_report_out_of_memory_keeps_the_run_and_blames_the_report(capsys, tiny, tmp_path, monkeypatch, caplog):
    def no_memory(*a, **k):
        raise MemoryError

    monkeypatch.setattr(report, "write_report", no_memory)
    code, out, err = run(capsys, "train", tiny, *TINY_RUN, "--run-dir", tmp_path / "r")
    assert code == 0, err
    assert (tmp_path / "r" / "results.json").is_file() and (tmp_path / "r" / "best.pt").is_file()
    said = caplog.text + err
    assert "report ran out of memory" in said and "--batch-size" not in said


def test_report_command_out_of_memory_is_one_line_without_batch_size_advice(capsys, trained_tiny, monkeypatch):
    def no_memory(*a, **k):
        raise MemoryError

    import attrfit.cli.report

    monkeypatch.setattr(attrfit.cli.report, "make_report", no_memory)
    code, out, err = run(capsys, "report", trained_tiny[0], "--out", trained_tiny[0] / "nowhere.html")
    line = one_error_line(code, err)
    assert "report" in line and "--batch-size" not in line
    assert not (trained_tiny[0] / "nowhere.html").exists()


def test_label_summary_names_at_most_twenty_classes_per_head():
    import torch

    from attrfit.cli.commands import label_summary
    from attrfit.data.schema import Schema

    schema = Schema(heads=("ident",), classes={"ident": tuple(f"p{i}" for i in range(300))})
    data = type("D", (), {"labels": torch.arange(300)[:, None], "sides": {"train": torch.arange(300)},
                          "schema": schema})()
    line = label_summary(data).splitlines()[1]
    assert line.count(", ") <= 21 and "and 280 more classes" in line


def test_fraction_fields_documented_with_their_range():
    f = {fl.name: fl for fl in dataclasses.fields(TrainConfig().optim)}["label_smoothing"]
    assert f.metadata["check"](1.0) and f.metadata["check"](0.5) is None and f.metadata["check"](math.nan)
