"""``attrfit dataset``: every reader on tiny files in its real schema (MATLAB 5 and -v7.3), good and bad.

The files come from tests/dataset_files.py. What is checked: the labels CSV holds the file's
labels for the right images, each official partition's split file has exactly the partition's
images on each side and is accepted by ``attrfit train`` as it is, the categorical folding
follows its stated rule, and each bad input is one ``attrfit: error:`` line.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("scipy", reason="the 'datasets' extra (scipy, h5py) is not installed")
pytest.importorskip("h5py", reason="the 'datasets' extra (scipy, h5py) is not installed")

import dataset_files as files  # noqa: E402
from helpers import assert_one_error, cli  # noqa: E402

from attrfit.data.load import DataConfig, read_checked  # noqa: E402
from attrfit.data.formats import peta as peta_format  # noqa: E402
from attrfit.data.formats.convert import Request, convert  # noqa: E402
from attrfit.data.formats.matfile import load_mat  # noqa: E402
from attrfit.data.split import load_split  # noqa: E402

VERSIONS = (files.V5, files.V73)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def assert_sides(split_path: Path, csv_path: Path, image_of_row: list[Path], sides: dict[str, np.ndarray]):
    """The split's sides are exactly the partition's rows (0-based), as the CSV names their images."""
    split = load_split(split_path)
    by_file = {str((csv_path.parent / r["image_path"]).resolve()): r["image_path"] for r in read_csv(csv_path)}
    for side, rows in sides.items():
        expected = sorted(by_file[str(image_of_row[i].resolve())] for i in rows)
        assert split.sides[side] == expected, side
    table, _, _, checked = read_checked(DataConfig(csv=str(csv_path), split=str(split_path)))  # what train does
    assert {s: len(v) for s, v in checked.items()} == {s: len(v) for s, v in sides.items()}
    return split, table


# ---------------------------------------------------------------- the MATLAB reader

def test_v5_and_v73_files_read_the_same(tmp_path):
    a = load_mat(files.write_rap(tmp_path / "a", files.V5))["RAP_annotation"]
    b = load_mat(files.write_rap(tmp_path / "b", files.V73))["RAP_annotation"]
    assert list(a) == list(b) == ["name", "data", "attribute", "selected_attribute", "partition_attribute",
                                  "person_identity", "partition_reid"]
    assert (a["data"] == b["data"]).all() and a["data"].shape == (files.RAP_N, len(files.RAP_ATTRIBUTES))
    assert list(a["name"].ravel()) == list(b["name"].ravel()) == [files.rap_name(i) for i in range(files.RAP_N)]
    assert a["partition_attribute"].shape == b["partition_attribute"].shape == (1, 5)
    for x, y in zip(a["partition_attribute"].ravel(), b["partition_attribute"].ravel()):
        assert all((x[k] == y[k]).all() and x[k].shape == y[k].shape for k in ("train_index", "val_index", "test_index"))
    assert (a["person_identity"] == b["person_identity"]).all() and b["person_identity"].dtype == np.int16


def test_a_missing_extra_is_named(tmp_path, capsys, monkeypatch):
    mat = files.write_pa100k(tmp_path / "pa", files.V5)
    monkeypatch.setitem(sys.modules, "scipy", None)  # import scipy now raises ImportError
    code, _, err = cli(capsys, "dataset", "pa100k", mat, "--out", tmp_path / "out")
    assert_one_error(code, err, "scipy", "attrfit[datasets]")


# ---------------------------------------------------------------- PETA

@pytest.mark.parametrize("version", VERSIONS)
def test_peta_mat_with_toolkit_images_gives_the_five_trials(tmp_path, version):
    mat = files.write_peta_mat(tmp_path / "PETA.mat", version)
    files.write_peta_toolkit_images(tmp_path / "images")
    c = convert(Request("peta", mat, tmp_path / "out"))
    assert [w.split.name for w in c.splits] == ["official.split.json"] + [f"official-{k}.split.json" for k in range(2, 6)]
    rows = files.peta_rows()
    image_of_row = [tmp_path / "images" / f"{i + 1:05d}.png" for i in range(len(rows))]
    for k, trial in enumerate(files.peta_trials(len(rows))):
        sides = {s: trial[s] - 1 for s in ("train", "val", "test")}  # PETA.mat's numbers are 1-based
        split, _ = assert_sides(c.splits[k].split, c.csv, image_of_row, sides)
        assert split.origin.startswith(f"PETA.mat partion_attribute trial {k + 1} of the five")
    table = read_csv(c.csv)
    people = files.peta_people()
    assert list(table[0])[:3] == ["image_path", "person_id", "personalLess30"] and len(table[0]) == 2 + 35
    for i, (s, _, pid) in enumerate(rows):  # every label is the file's
        assert [int(table[i][a]) for a in peta_format.SELECTED] == list(people[(s, pid)][:35])
        assert table[i]["person_id"] == f"{s}/{pid}"
    manifest = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert manifest["dataset"] == "PETA" and manifest["rows"] == len(rows) and manifest["labels"] == "binary"


def test_peta_release_and_peta_mat_give_the_same_labels_on_the_release_images(tmp_path):
    release = files.write_peta_release(tmp_path)
    mat = files.write_peta_mat(tmp_path / "PETA.mat")
    by_release = convert(Request("peta", release, tmp_path / "a", attributes="all"))
    by_mat = convert(Request("peta", mat, tmp_path / "b", images=release, attributes="all"))
    a, b = read_csv(by_release.csv), read_csv(by_mat.csv)
    assert [r["image_path"] for r in a] == [r["image_path"] for r in b]  # release order = PETA.mat's order
    heads = [h for h in a[0] if h not in ("image_path", "person_id")]
    assert heads == [h for h in b[0] if h not in ("image_path", "person_id")] and "footwearSneaker" in heads
    assert [[r[h] for h in heads] for r in a] == [[r[h] for h in heads] for r in b]
    assert len({r["person_id"] for r in a}) == len(files.peta_people())
    assert by_release.splits == () and any("accessoryFaceMask x1" in n for n in by_release.notes)
    assert any("CUHK: 1 labelled ID(s) have no image" in n for n in by_release.notes)
    image_of_row = [release / s / "archive" / f for s, f, _ in files.peta_rows()]
    trial = files.peta_trials(len(image_of_row))[0]
    assert_sides(by_mat.splits[0].split, by_mat.csv, image_of_row, {s: trial[s] - 1 for s in trial})


def test_peta_mat_refuses_release_images_out_of_order(tmp_path, capsys):
    release = files.write_peta_release(tmp_path)
    mat = files.write_peta_mat(tmp_path / "PETA.mat")
    mit = release / "MIT" / "archive"
    (mit / "00004_male_back.jpg").rename(mit / "00000_male_back.jpg")  # the last person's file sorts first
    code, _, err = cli(capsys, "dataset", "peta", mat, "--images", release, "--out", tmp_path / "out")
    assert_one_error(code, err, "is person 1 of MIT", "00000_male_back.jpg", "not in the release's order")
    assert not (tmp_path / "out" / "labels.csv").exists()


def test_categorical_folding_follows_its_rule(tmp_path):
    mat = files.write_peta_mat(tmp_path / "PETA.mat")
    files.write_peta_toolkit_images(tmp_path / "images")
    c = convert(Request("peta", mat, tmp_path / "out", labels="categorical"))
    table = read_csv(c.csv)
    people = files.peta_people()
    ages = [peta_format.ATTRIBUTES.index(a) for a in files.AGES]
    expected = []
    for s, _, pid in files.peta_rows():
        on = [k for k, j in enumerate(ages) if people[(s, pid)][j]]
        expected.append(("Less30", "Less45", "Less60", "Larger60")[on[0]] if len(on) == 1 else "")
    assert [r["age"] for r in table] == expected
    assert "personalLess30" not in table[0] and list(table[0])[2] == "age"  # the group sits where its first member was
    n_none = sum(1 for s, _, p in files.peta_rows() if (s, p) == ("CUHK", 606))
    n_two = sum(1 for s, _, p in files.peta_rows() if (s, p) == ("MIT", 4))
    assert f"age (Less30, Less45, Less60, Larger60): {n_none} row(s) with no positive and {n_two} with several " \
           "left unlabelled" in c.notes
    _, t = read_checked(DataConfig(csv=str(c.csv), split=str(c.splits[0].split)))[:2]
    assert t.schema.classes["age"] == ("Larger60", "Less30", "Less45", "Less60")


# ---------------------------------------------------------------- PA-100k, RAPv2, Market-1501, DukeMTMC

@pytest.mark.parametrize("version", VERSIONS)
def test_pa100k_partition_is_its_three_lists(tmp_path, version):
    mat = files.write_pa100k(tmp_path, version)
    c = convert(Request("pa100k", mat, tmp_path / "out"))
    start, sides = 0, {}
    for side, n in files.PA100K_SIDES.items():
        sides[side] = np.arange(start, start + n)
        start += n
    image_of_row = [tmp_path / "data" / f"{i + 1:06d}.jpg" for i in range(start)]
    split, table = assert_sides(c.splits[0].split, c.csv, image_of_row, sides)
    assert split.group_column is None and table.schema.heads == files.PA100K_ATTRIBUTES
    assert read_csv(c.csv)[0]["Skirt&Dress"] in ("0", "1")


@pytest.mark.parametrize("version", VERSIONS)
def test_rapv2_selected_attributes_uncertain_labels_and_identities(tmp_path, version):
    mat = files.write_rap(tmp_path, version)
    c = convert(Request("rapv2", mat, tmp_path / "out"))
    table = read_csv(c.csv)
    selected = [files.RAP_ATTRIBUTES[j - 1] for j in files.RAP_SELECTED]
    assert list(table[0])[2:] == selected
    assert [r["Femal"] for r in table][2] == "" and table[7]["Femal"] == ""  # 2 = uncertain: unlabelled
    assert [r["person_id"] for r in table[:4]] == ["1", "1", "1", "2"] and table[15]["person_id"] == ""
    image_of_row = [tmp_path / "RAP_dataset" / files.rap_name(i) for i in range(files.RAP_N)]
    for k, trial in enumerate(files.rap_trials()):
        assert_sides(c.splits[k].split, c.csv, image_of_row, {s: trial[s] - 1 for s in trial})
    all_attrs = convert(Request("rapv2", mat, tmp_path / "all", attributes="all", labels="categorical"))
    heads = all_attrs.heads
    assert "viewpoint" not in heads and "person-position-x" not in heads  # not binary attributes
    assert "age" in heads and "upper_color" in heads  # 'up-ColorRed' (the release's spelling) folds with ub-Color*


@pytest.mark.parametrize("version", VERSIONS)
def test_market_identity_labels_reach_every_image_and_val_comes_from_train_identities(tmp_path, version):
    mat = files.write_market(tmp_path, version)
    c = convert(Request("market1501", mat, tmp_path / "out", labels="categorical"))
    table = read_csv(c.csv)
    assert len(table) == 2 * (len(files.MARKET_IDS["train"]) + len(files.MARKET_IDS["test"]))  # no 0000, no -1
    top = load_mat(mat)["market_attribute"]
    for r in table:
        side = "train" if "bounding_box_train" in r["image_path"] else "test"
        k = list(top[side]["image_index"].ravel()).index(r["person_id"])
        assert r["gender"] == ("male", "female")[top[side]["gender"][0, k] - 1]
        assert r["age"] == ("young", "teenager", "adult", "old")[top[side]["age"][0, k] - 1]
    split = load_split(c.splits[0].split)
    pid = {r["image_path"]: r["person_id"] for r in table}
    owners = {s: {pid[p] for p in split.sides[s]} for s in ("train", "val", "test")}
    assert owners["test"] == set(files.MARKET_IDS["test"]) and owners["val"] and not owners["val"] & owners["train"]
    assert owners["train"] | owners["val"] == set(files.MARKET_IDS["train"]) and split.group_column == "person_id"
    assert c.splits[0].shared_identities == 0
    note = next(n for n in c.notes if n.startswith("up_color"))
    assert "4 row(s) with no positive and 4 with several" in note  # per side one identity of each, 2 images each
    assert any("2 image(s) of bounding_box_test/ belong to no labelled identity" in n for n in c.notes)


def test_duke_unlabelled_identity_field_is_a_missing_label(tmp_path):
    mat = files.write_market(tmp_path, files.V73, duke=True)
    c = convert(Request("dukemtmc", mat, tmp_path / "out"))
    table = read_csv(c.csv)
    third = files.MARKET_IDS["train"][2]
    assert {r["top"] for r in table if r["person_id"] == third} == {""}
    assert {r["top"] for r in table if r["person_id"] != third} <= {"0", "1"}


# ---------------------------------------------------------------- partition files (zero-shot protocols)

def test_partition_files_json_indices_and_csv_names(tmp_path):
    mat = files.write_pa100k(tmp_path, files.V5)
    (tmp_path / "zs.json").write_text(json.dumps({"train_idx": [0, 1, 2, 3, 4], "val_idx": [5, 6], "test_idx": [7, 8]}))
    c = convert(Request("pa100k", mat, tmp_path / "a", partition=tmp_path / "zs.json"))
    zs = c.splits[-1]
    assert zs.split.name == "zs.split.json" and zs.csv.name == "zs.csv"  # 9 of 16 images: a table of its own
    image_of_row = [tmp_path / "data" / f"{i + 1:06d}.jpg" for i in range(16)]
    assert_sides(zs.split, zs.csv, image_of_row, {"train": [0, 1, 2, 3, 4], "val": [5, 6], "test": [7, 8]})
    lines = ["side,image"] + [f"train,{i + 1:06d}.jpg" for i in range(12)] + [f"test,{i + 1:06d}.jpg" for i in range(12, 16)]
    (tmp_path / "zs2.csv").write_text("\n".join(lines) + "\n")
    c = convert(Request("pa100k", mat, tmp_path / "b", partition=tmp_path / "zs2.csv", val_fraction=0.25))
    split = load_split(c.splits[-1].split)
    assert split.counts == {"train": 9, "val": 3, "test": 4} and c.splits[-1].csv.name == "labels.csv"
    assert "val is 3 of the 12 train images (0.25, seed 0)" in split.origin


@pytest.mark.parametrize("content, needles", [
    (b"\x80\x04\x95\x00", ("pickle", "never opens")),
    (json.dumps({"train": [0, 1], "val": [2], "test": [3, 16]}).encode(), ("test side lists index 16", "outside the 16")),
    (json.dumps({"train": [0, 1], "val": [1], "test": [3]}).encode(), ("image index 1 is listed 2 times",)),
    (json.dumps({"train": ["000001.jpg"], "test": ["nope.jpg"]}).encode(), ("names 1 image(s)", "nope.jpg")),
    (json.dumps({"val": [1], "test": [3]}).encode(), ("no 'train' list",)),
])
def test_bad_partition_files_are_one_error(tmp_path, capsys, content, needles):
    mat = files.write_pa100k(tmp_path, files.V5)
    (tmp_path / "p.json").write_bytes(content)
    code, _, err = cli(capsys, "dataset", "pa100k", mat, "--partition", tmp_path / "p.json", "--out", tmp_path / "out")
    assert_one_error(code, err, "p.json", *needles)
    assert not (tmp_path / "out" / "labels.csv").exists()


# ---------------------------------------------------------------- images

def test_missing_images_are_listed_and_skipped_only_when_asked(tmp_path, capsys):
    mat = files.write_pa100k(tmp_path, files.V5)
    (tmp_path / "data" / "000003.jpg").unlink()
    (tmp_path / "data" / "000014.jpg").write_text("not an image")
    code, _, err = cli(capsys, "dataset", "pa100k", mat, "--out", tmp_path / "out")
    assert_one_error(code, err, "1 of 16 images are missing and 1 unreadable", "--skip-missing")
    listed = (tmp_path / "out" / "missing_images.txt").read_text().splitlines()
    assert listed[0] == "missing\t000003.jpg" and listed[1].startswith("unreadable\t000014.jpg")
    assert not (tmp_path / "out" / "labels.csv").exists() and not (tmp_path / "out" / "dataset.json").exists()
    code, out, err = cli(capsys, "dataset", "pa100k", mat, "--out", tmp_path / "out", "--skip-missing")
    assert code == 0, err
    split = load_split(tmp_path / "out" / "official.split.json")
    assert split.counts == {"train": 7, "val": 4, "test": 3}
    assert json.loads((tmp_path / "out" / "dataset.json").read_text())["missing_images"] == 2


def test_images_under_another_suffix_are_found(tmp_path):
    mat = files.write_pa100k(tmp_path, files.V5)
    (tmp_path / "data" / "000001.jpg").rename(tmp_path / "data" / "000001.png")
    c = convert(Request("pa100k", mat, tmp_path / "out"))
    assert read_csv(c.csv)[0]["image_path"] == "../data/000001.png"
    assert any("1 image(s) found under another image suffix" in n for n in c.notes)


# ---------------------------------------------------------------- bad input: one line each

def test_bad_inputs_are_one_error_line(tmp_path, capsys):
    peta = files.write_peta_mat(tmp_path / "PETA.mat")
    cases = [
        (("pa100k", peta), ("PETA.mat", "holds 'peta'", "attrfit dataset peta")),
        (("rapv2", files.write_market(tmp_path / "m")), ("market_attribute.mat", "attrfit dataset market1501")),
        (("peta", tmp_path / "nothing.mat"), ("no such file",)),
    ]
    (tmp_path / "text.mat").write_text("hello")
    cases.append((("peta", tmp_path / "text.mat"), ("not a MATLAB .mat file",)))
    files.save_mat(tmp_path / "nofield.mat", {"peta": {"data": np.zeros((2, 109), np.uint16)}})
    cases.append((("peta", tmp_path / "nofield.mat"), ("peta: has no field 'attribute'", "fields: data")))
    files.write_pa100k(tmp_path / "short", files.V5, label_rows={"val": 3})
    cases.append((("pa100k", tmp_path / "short" / "annotation.mat"), ("val_label vs val_images_name",
                                                                      "the labels are 3x26, but there are 4 images")))
    bad = files.peta_trials(len(files.peta_rows()))
    bad[2]["test"] = np.append(bad[2]["test"][:-1], 99)
    files.write_peta_mat(tmp_path / "bad" / "PETA.mat", trials=bad)
    cases.append((("peta", tmp_path / "bad" / "PETA.mat"), ("partion_attribute{3}", "test side lists index 99",
                                                            "outside the 18 images")))
    for k, ((name, src), needles) in enumerate(cases):
        code, _, err = cli(capsys, "dataset", name, src, "--out", tmp_path / f"out{k}")
        assert_one_error(code, err, *needles)
        assert not (tmp_path / f"out{k}" / "labels.csv").exists()


def test_an_output_folder_of_another_dataset_or_other_files_is_refused(tmp_path, capsys):
    pa = files.write_pa100k(tmp_path / "pa", files.V5)
    rap = files.write_rap(tmp_path / "rap", files.V5)
    assert cli(capsys, "dataset", "pa100k", pa, "--out", tmp_path / "out")[0] == 0
    before = (tmp_path / "out" / "labels.csv").read_bytes()
    code, _, err = cli(capsys, "dataset", "rapv2", rap, "--out", tmp_path / "out", "--force")
    assert_one_error(code, err, "holds the PA-100k dataset", "choose another folder")
    code, _, err = cli(capsys, "dataset", "pa100k", pa, "--out", tmp_path / "out")
    assert_one_error(code, err, "already holds PA-100k", "--force")
    assert (tmp_path / "out" / "labels.csv").read_bytes() == before
    assert cli(capsys, "dataset", "pa100k", pa, "--out", tmp_path / "out", "--force")[0] == 0
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "labels.csv").write_text("image_path,a\n")
    code, _, err = cli(capsys, "dataset", "pa100k", pa, "--out", tmp_path / "mine", "--force")
    assert_one_error(code, err, "did not write")
    assert (tmp_path / "mine" / "labels.csv").read_text() == "image_path,a\n"


# ---------------------------------------------------------------- the protocol end to end

def test_train_and_evaluate_on_the_official_partition(tmp_path, capsys):
    mat = files.write_peta_mat(tmp_path / "PETA.mat")
    files.write_peta_toolkit_images(tmp_path / "images")
    code, out, err = cli(capsys, "dataset", "peta", mat, "--out", tmp_path / "peta")
    assert code == 0, err
    assert f"attrfit train {tmp_path / 'peta' / 'labels.csv'} --split {tmp_path / 'peta' / 'official.split.json'}" in out
    code, _, err = cli(capsys, "train", tmp_path / "peta" / "labels.csv", "--split", tmp_path / "peta" / "official.split.json",
                       "--size", "16x8", "--width", "8", "--stages", "2", "--epochs", "2", "--batch-size", "8",
                       "--lr", "0.05", "--precision", "fp32", "--no-report", "--run-dir", tmp_path / "run")
    assert code == 0, err
    code, out, err = cli(capsys, "evaluate", tmp_path / "run", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["side"] == "test" and result["instance"]["n_images"] == len(files.peta_trials(18)[0]["test"])
    assert 0 <= result["instance"]["mA"] <= 1 and result["instance"]["n_attributes"] == 35
    code, out, err = cli(capsys, "evaluate", tmp_path / "run")
    assert code == 0 and "binary attributes (35): mA" in out and "instance-based" in out, out + err
