"""Real users' tables and splits: columns, label cells, delimiters, encodings, and a split
that the later commands must follow (or refuse, naming the real cause).

Results are checked through the library; messages through ``attrfit.cli.app.main`` (one
``attrfit: error:`` line, exit 2, nothing written).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_one_error, cli, write_tiny

from attrfit.data.load import Data, DataConfig, check_trainable, read_checked
from attrfit.core.errors import AttrfitError
from attrfit.data.split import Split, load_split, make_split, save_split
from attrfit.data.table import read_table
from attrfit.data.schema import Schema
from attrfit.data.labels import class_order

TINY = ["--size", "16x16", "--width", "8", "--stages", "2", "--batch-size", "16", "--lr", "0.05",
        "--epochs", "1", "--precision", "fp32", "--no-report", "--quiet"]




def write(path: Path, text: str | bytes, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def table_text(rows: list[dict]) -> str:
    lines = [",".join(rows[0])] + [",".join(str(v) for v in r.values()) for r in rows]
    return "\n".join(lines) + "\n"


def edit_csv(path: Path, edit) -> None:
    rows = edit(list(csv.DictReader(open(path, newline=""))))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


# ---------------------------------------------------------------- 1, 2: which columns are heads

def test_ignore_columns_adds_to_filename(tmp_path, capsys):
    rows = [{"filename": f"orig/{i}.jpg", "note": "x" if i % 2 else "y", "image_path": f"{i}.jpg",
             "g": "ab"[i % 2]} for i in range(20)]
    path = write(tmp_path / "l.csv", table_text(rows))
    assert read_table(path, ignore_columns=["note"], check_files=False).schema.heads == ("g",)
    for i in range(20):
        write(tmp_path / f"{i}.jpg", b"x")
    code, out, err = cli(capsys, "split", path, "--ignore-columns", "note", "--out", tmp_path / "s.json")
    assert code == 0, err
    assert "heads: g\n" in out  # filename did not become a 20-class head


def test_identifier_and_numeric_columns_are_refused_unless_named(tmp_path, capsys):
    rows = [{"image_path": f"{i}.jpg", "id": f"P{i:04d}", "age": 1 + i % 100, "g": "ab"[i % 2]} for i in range(200)]
    path = write(tmp_path / "l.csv", table_text(rows))
    with pytest.raises(AttrfitError, match=r"'id': 200 distinct values in 200 labelled rows.*'age': 100 distinct "
                                           r"numbers from 1 to 100.*--ignore-columns id,age"):
        read_table(path, check_files=False)
    assert read_table(path, ignore_columns=["id", "age"], check_files=False).schema.heads == ("g",)
    named = read_table(path, heads=["age", "g"], check_files=False)  # named in --heads: the user's choice
    assert named.schema.classes["age"][:3] == ("1", "2", "3")  # numeric classes in numeric order
    code, _, err = cli(capsys, "split", path, "--out", tmp_path / "s.json")
    assert_one_error(code, err, "['id', 'age']", "--ignore-columns id,age", "--heads")
    assert not (tmp_path / "s.json").exists()


def test_many_class_head_with_enough_rows_is_a_head(tmp_path):
    rows = [{"image_path": f"{i}.jpg", "kind": f"k{i % 60}"} for i in range(600)]  # 10 rows per class
    t = read_table(write(tmp_path / "l.csv", table_text(rows)), check_files=False)
    assert len(t.schema.classes["kind"]) == 60


# ---------------------------------------------------------------- 3: label cells

def test_missing_tokens_whitespace_and_none(tmp_path):
    labels = ["None", " Bag ", "NA", "n/a", "", "NULL", "nan", "#N/A", "<NA>", "Bag", "None"]
    rows = [{"image_path": f"{i}.jpg", "bag": v} for i, v in enumerate(labels)]
    t = read_table(write(tmp_path / "l.csv", table_text(rows)), check_files=False)
    assert t.schema.classes["bag"] == ("Bag", "None")
    assert (t.labels[:, 0] == -1).sum() == 7
    assert t.raw["bag"][1] == "Bag"


def test_numeric_labels_are_one_class_per_number(tmp_path):
    labels = ["1", "1.0", "2", "10", "01", "2.50", "2.5", ""]
    rows = [{"image_path": f"{i}.jpg", "n": v} for i, v in enumerate(labels)]
    t = read_table(write(tmp_path / "l.csv", table_text(rows)), check_files=False)
    assert t.schema.classes["n"] == ("1", "2", "2.5", "10")
    assert t.labels[:, 0].tolist() == [0, 0, 1, 3, 0, 2, 2, -1]


@pytest.mark.parametrize("names, order", [
    ({"60+", "<30", "30-45", "45-60"}, ("<30", "30-45", "45-60", "60+")),
    ({"55+", "25-35", "15-25"}, ("15-25", "25-35", "55+")),
    ({"Daily/Office/Work Bag", "None", "Grocery/Home/Plastic Bag"},
     ("Daily/Office/Work Bag", "Grocery/Home/Plastic Bag", "None")),
])
def test_class_order(names, order):
    assert class_order(names) == order


def test_case_and_spacing_variants_are_warned(tmp_path, caplog):
    rows = [{"image_path": f"{i}.jpg", "gender": v} for i, v in enumerate(["Male", "male", "MALE", "female"])]
    with caplog.at_level(logging.WARNING, logger="attrfit"):
        read_table(write(tmp_path / "l.csv", table_text(rows)), check_files=False)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "'gender'" in warnings[0] and "MALE / Male / male" in warnings[0]


def test_split_saved_with_another_class_order_still_fits(tmp_path):
    """A split (or model) saved when classes sorted alphabetically keeps its label indices."""
    root = tmp_path / "d"
    path = write_tiny(root)
    edit_csv(path, lambda rows: [{**r, "bright": ["<30", "30-45", "60+"][i % 3]} for i, r in enumerate(rows)])
    table = read_table(path)
    assert table.schema.classes["bright"] == ("<30", "30-45", "60+")
    split = make_split(table)
    old = Schema(split.schema.heads, {**split.schema.classes, "bright": ("30-45", "60+", "<30")})  # alphabetical
    split = dataclasses.replace(split, schema=old)
    save_split(split, root / "labels.split.json")
    t, _, _, rows = read_checked(DataConfig(csv=str(path)))
    assert t.schema.classes["bright"] == ("30-45", "60+", "<30")
    assert t.labels[0, 1] == 2 and t.raw["bright"][0] == "<30"
    assert sum(len(r) for r in rows.values()) == len(t)


# ---------------------------------------------------------------- 4: blank group cells

def test_blank_group_cells_are_groups_of_their_own(tmp_path, caplog):
    path = write_tiny(tmp_path / "d", n=90, groups=20)
    edit_csv(path, lambda rows: [{**r, "pid": "" if i % 3 == 0 else r["pid"]} for i, r in enumerate(rows)])
    table = read_table(path, group_column="pid")
    with caplog.at_level(logging.WARNING, logger="attrfit"):
        split = make_split(table, 0.2, 0.2)
    side = {p: s for s, ps in split.sides.items() for p in ps}
    blanks = [p for p, g in zip(table.paths, table.groups) if g == ""]
    assert len({side[p] for p in blanks}) == 3  # spread over the sides, not one big group
    assert any("30 row(s) have an empty --group-column 'pid'" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- 5, 6: splits that cannot train

def test_head_without_train_labels_is_refused(tmp_path, capsys):
    path = write_tiny(tmp_path / "d", missing_every=0)
    test_side = make_split(read_table(path)).sides["test"][:2]  # the assignment ignores other heads
    edit_csv(path, lambda rows: [{**r, "rare": {test_side[0]: "x", test_side[1]: "y"}.get(r["image_path"], "")}
                                 for r in rows])
    with pytest.raises(AttrfitError, match=r"head\(s\) \['rare'\] with no labelled row on the train side"):
        make_split(read_table(path))
    code, _, err = cli(capsys, "split", path)
    assert_one_error(code, err, "'rare'", "--ignore-columns rare")
    assert not path.with_name("labels.split.json").exists()


def fake_data(table, split, train, val) -> Data:
    sides = {"train": torch.tensor(train), "val": torch.tensor(val), "test": torch.tensor([], dtype=torch.int64)}
    split = Split.from_dict({"seed": 0, "fingerprint": "", "sides": {s: [] for s in sides}, **split})
    return Data(table, split, Path("s.json"), torch.zeros(len(table), 3, 2, 2, dtype=torch.uint8),
                torch.from_numpy(table.labels), list(table.paths), sides)


def test_train_names_the_real_cause_of_an_empty_val_side(tiny):
    table = read_table(tiny)
    with pytest.raises(AttrfitError, match="too few for a val share") as e:
        check_trainable(fake_data(table, {"val_fraction": 0.1, "counts": {"val": 0}}, [0, 1, 2], []))
    assert "--val-fraction" not in str(e.value) and "--out NEW.split.json" in str(e.value)
    with pytest.raises(AttrfitError, match="unreadable and dropped"):
        check_trainable(fake_data(table, {"val_fraction": 0.1, "counts": {"val": 4}}, [0, 1, 2], []))
    with pytest.raises(AttrfitError, match="made with --val-fraction 0"):
        check_trainable(fake_data(table, {"val_fraction": 0.0, "counts": {"val": 0}}, [0, 1, 2], []))
    with pytest.raises(AttrfitError, match=r"\['bright'\] with no labelled row"):
        check_trainable(fake_data(table, {"counts": {}}, [3, 10], [0]))  # rows 3 and 10: 'bright' missing


def test_split_refuses_empty_sides_naming_the_cause(tmp_path, capsys):
    few = write_tiny(tmp_path / "few", n=5)
    code, _, err = cli(capsys, "split", few)
    assert_one_error(code, err, "test side empty", "5 rows are too few", "--test-fraction")
    assert not few.with_name("labels.split.json").exists()
    code, _, err = cli(capsys, "train", few, *TINY, "--run-dir", tmp_path / "run")
    assert_one_error(code, err, "5 rows are too few")
    assert not (tmp_path / "run").exists() and not few.with_name("labels.split.json").exists()

    grouped = write_tiny(tmp_path / "g", n=30, groups=3)
    code, _, err = cli(capsys, "split", grouped, "--group-column", "pid")
    assert_one_error(code, err, "3 groups of 'pid' are too few")

    rows = [{"image_path": f"{i}.jpg", "kind": f"k{i // 2}", "g": "ab"[i % 2]} for i in range(40)]
    many = write(tmp_path / "m" / "l.csv", table_text(rows))  # 20 classes of 2 rows: no class has a test share
    table = read_table(many, check_files=False)
    with pytest.raises(AttrfitError, match="stratifying by 'kind' .* 20 classes .* --stratify none"):
        make_split(table)
    assert len(make_split(table, stratify="none").sides["test"]) == 6


# ---------------------------------------------------------------- 7: one file, two spellings

@pytest.mark.parametrize("other", ["./img/3.png", "img/../img/3.png", "ABS"])
def test_same_file_under_two_spellings_is_a_duplicate(tmp_path, capsys, other):
    path = write_tiny(tmp_path / "d", n=12)
    other = str((tmp_path / "d" / "img" / "3.png").resolve()) if other == "ABS" else other
    edit_csv(path, lambda rows: [{**r, "image_path": other} if i == 9 else r for i, r in enumerate(rows)])
    code, _, err = cli(capsys, "split", path)
    assert_one_error(code, err, "duplicate image_path", "'img/3.png' (row 5)", f"'{other}' (row 11)")


# ---------------------------------------------------------------- 8, 9: an existing split decides

def test_split_options_that_differ_from_the_saved_split(tiny, tmp_path, capsys):
    assert cli(capsys, "split", tiny, "--test-fraction", "0.2")[0] == 0
    code, _, err = cli(capsys, "train", tiny, *TINY, "--test-fraction", "0.3", "--split-seed", "4",
                       "--run-dir", tmp_path / "run")
    assert_one_error(code, err, "already exists and was made with other settings", "--test-fraction 0.3 (the split: 0.2)",
                     "--split-seed 4 (the split: 0)", "--out NEW.split.json", "--split NEW.split.json")
    assert not (tmp_path / "run").exists()
    for same in ([], ["--test-fraction", "0.2"]):
        code, out, err = cli(capsys, "prepare", tiny, "--size", "16x16", *same)
        assert code == 0, err
        assert "test 12 (20.0%)" in out


def test_group_column_recorded_in_the_split_is_used(tiny_groups, capsys):
    assert cli(capsys, "split", tiny_groups, "--group-column", "pid")[0] == 0  # the README's sequence
    code, out, err = cli(capsys, "prepare", tiny_groups, "--size", "16x16")
    assert code == 0, err
    assert "grouped by 'pid'" in out
    code, _, err = cli(capsys, "prepare", tiny_groups, "--size", "16x16", "--group-column", "color")
    msg = assert_one_error(code, err, "made with group column 'pid', not --group-column 'color'")
    assert "relabelled" not in msg


def test_other_heads_than_the_split_are_named(tiny_groups, capsys):
    assert cli(capsys, "split", tiny_groups, "--heads", "color,bright")[0] == 0
    code, _, err = cli(capsys, "prepare", tiny_groups, "--size", "16x16")  # pid becomes a head too
    msg = assert_one_error(code, err, "made for other heads", "['color', 'bright']", "['color', 'bright', 'pid']",
                           "--heads color,bright")
    assert "relabelled" not in msg
    assert cli(capsys, "prepare", tiny_groups, "--size", "16x16", "--heads", "color,bright")[0] == 0


# ---------------------------------------------------------------- 10: runs keep their split

def test_run_keeps_its_split_for_evaluate_and_resume(tiny, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = cli(capsys, "train", tiny, *TINY, "--run-dir", run)
    assert code == 0, err
    original = tiny.with_name("labels.split.json")
    assert load_split(run / "split.json").assignment == load_split(original).assignment
    before = cli(capsys, "evaluate", run, "--json")[1]
    assert cli(capsys, "split", tiny, "--split-seed", "9", "--force")[0] == 0  # replaced in place
    code, after, err = cli(capsys, "evaluate", run, "--json")
    assert code == 0 and json.loads(after) == json.loads(before), err
    original.unlink()
    code, after, err = cli(capsys, "evaluate", run, "--json")
    assert code == 0 and json.loads(after) == json.loads(before), err


def test_mismatch_advice_is_a_new_split_file(tiny, capsys):
    assert cli(capsys, "split", tiny)[0] == 0
    edit_csv(tiny, lambda rows: [{**r, "color": "red"} if i == 0 else r for i, r in enumerate(rows)])
    code, _, err = cli(capsys, "prepare", tiny, "--size", "16x16")
    msg = assert_one_error(code, err, "relabelled", f"attrfit split {tiny} --out NEW.split.json",
                           "--split NEW.split.json")
    assert "split --force" not in msg


# ---------------------------------------------------------------- 11 and more: the file itself

@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_other_delimiters(tmp_path, sep):
    text = f"image_path{sep}gender{sep}bag\na.jpg{sep}m{sep}Daily, Office\nb.jpg{sep}f{sep}None\n"
    t = read_table(write(tmp_path / "l.csv", text), check_files=False)
    assert t.schema.heads == ("gender", "bag") and t.schema.classes["bag"] == ("Daily, Office", "None")


def test_trailing_commas_of_spreadsheets(tmp_path):
    text = "image_path,g,,\na.jpg,m,,\nb.jpg,f,,\nc.jpg,f,,,\n"
    assert read_table(write(tmp_path / "l.csv", text), check_files=False).schema.heads == ("g",)
    with pytest.raises(AttrfitError, match="column 3 has no name in the header but holds values .e.g. row 3: 'oops'"):
        read_table(write(tmp_path / "l.csv", "image_path,g,\na.jpg,m,\nb.jpg,f,oops\n"), check_files=False)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-8-sig"])
def test_unicode_encodings_with_a_bom(tmp_path, encoding):
    t = read_table(write(tmp_path / "l.csv", "image_path,g\ncafé.jpg,m\nb.jpg,f\n", encoding), check_files=False)
    assert t.paths == ["café.jpg", "b.jpg"]


@pytest.mark.parametrize("text, needles", [
    ("Image Path,g\na.jpg,m\nb.jpg,f\n", ["no 'image_path' column", "'Image Path'? rename it"]),
    ("image_path,g,g\na.jpg,m,f\nb.jpg,f,m\n", ["duplicate column names ['g']"]),
    ("image_path;g\n", ["has a header but no data rows"]),
    (b"image_path,g\na.jpg,m\nb.jpg,f\xe9\n", ["line 3 is not UTF-8", "Latin-1"]),
    ("filename,image_path\nx,a.jpg\n", ["no label columns besides filename, image_path"]),
])
def test_clear_errors_for_bad_files(tmp_path, capsys, text, needles):
    path = write(tmp_path / "l.csv", text)
    code, _, err = cli(capsys, "split", path)
    assert_one_error(code, err, *needles)
    assert not (tmp_path / "l.split.json").exists()


def test_backslash_paths_get_a_hint(tmp_path):
    (tmp_path / "img").mkdir()
    with pytest.raises(AttrfitError, match=r"write them with '/'"):
        read_table(write(tmp_path / "l.csv", "image_path,g\nimg\\a.jpg,m\nimg\\b.jpg,f\n"))


def test_reference_layout_is_unchanged(tmp_path):
    """The demo layout (filename ignored, eight heads, hvc class names) reads as before."""
    from attrfit.data.demo import make_demo

    path = make_demo(tmp_path / "demo", n=40, size=(16, 16), progress=False)
    t = read_table(path)
    assert t.schema.heads == ("gender", "imagequality", "age", "weight", "carryingbag", "footwear", "emotion",
                              "bodypose")
    assert t.schema.classes["age"] == tuple(sorted(t.schema.classes["age"]))  # 15-25 ... 55+: same order
    assert "None" in t.schema.classes["carryingbag"]
    assert (t.labels >= 0).all()
    assert np.array_equal(read_table(path, ignore_columns=[]).labels, t.labels)


def test_excel_sep_line(tmp_path):
    t = read_table(write(tmp_path / "l.csv", "sep=;\nimage_path;g\na.jpg;m\nb.jpg;f\n"), check_files=False)
    assert t.schema.heads == ("g",) and t.paths == ["a.jpg", "b.jpg"]


def test_heads_cannot_name_the_path_or_group_column(tiny_groups):
    with pytest.raises(AttrfitError, match=r"--heads names \['pid'\]"):
        read_table(tiny_groups, heads=["color", "pid"], group_column="pid")
    with pytest.raises(AttrfitError, match=r"--heads names \['image_path'\]"):
        read_table(tiny_groups, heads=["image_path", "color"])
