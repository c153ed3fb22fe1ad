import csv
import dataclasses
import json
import logging
import shutil

import numpy as np
import pytest
from helpers import write_tiny
from PIL import Image

import attrfit
from attrfit import cli
from attrfit.serving import predict
from attrfit.core.errors import AttrfitError
from attrfit.evaluation.scoring import score_checkpoint
from attrfit.evaluation.metrics import head_metrics
from attrfit.serving.predict import Predictor
from attrfit.serving.prediction_files import find_images, predict_files
from attrfit.data.split import load_split
from attrfit.data.table import read_table

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def trained(trained_tiny):
    """(run folder, labels CSV): pytest's session-wide tiny run (conftest.trained_tiny)."""
    return trained_tiny


@pytest.fixture(scope="module")
def predictor(trained):
    return attrfit.load(trained[0])


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def images_of(csv_path, n):
    return [str(csv_path.parent / f"img/{i}.png") for i in range(n)]


# ---------------------------------------------------------------- the command line, per input kind

def test_files_with_bad_ones_among_good(trained, tmp_path, caplog):
    run, labels = trained
    caplog.set_level(logging.INFO)
    good = images_of(labels, 3)
    (tmp_path / "corrupt.png").write_bytes(b"not a png at all")
    (tmp_path / "empty.jpg").write_bytes(b"")
    inputs = [good[0], str(tmp_path / "corrupt.png"), good[1], str(tmp_path / "empty.jpg"), good[2]]
    out = tmp_path / "pred.csv"
    assert cli.main(["predict", str(run), *inputs, "--out", str(out), "--all-probs", "--quiet"]) == 0
    rows = read_csv(out)
    assert [r["image_path"] for r in rows] == inputs  # input order, bad rows included
    assert [bool(r["error"]) for r in rows] == [False, True, False, True, False]
    assert rows[3]["error"] == "empty file" and rows[1]["color"] == "" and rows[1]["color_prob"] == ""
    expected = attrfit.load(run).predict(good)
    ok = [r for r in rows if not r["error"]]
    assert [r["color"] for r in ok] == expected.labels["color"]
    assert [r["bright"] for r in ok] == expected.labels["bright"]
    for r in ok:
        per_class = [float(r[f"color_prob_{c}"]) for c in ("blue", "green", "red")]
        assert sum(per_class) == pytest.approx(1, abs=1e-5)
        assert float(r["color_prob"]) == max(per_class)
    assert "corrupt.png" in caplog.text and "empty.jpg" in caplog.text  # on stderr from the CLI
    assert "predicted 3 of 5 images; 2 could not be read" in caplog.text


def test_folder_is_searched_recursively(trained, tmp_path):
    run, labels = trained
    (tmp_path / "in" / "deeper").mkdir(parents=True)
    shutil.copy(labels.parent / "img/0.png", tmp_path / "in" / "a.png")
    shutil.copy(labels.parent / "img/1.png", tmp_path / "in" / "deeper" / "b.PNG")
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    out = tmp_path / "pred.json"  # the format follows the extension
    assert cli.main(["predict", str(run), str(tmp_path / "in"), "--out", str(out), "--quiet"]) == 0
    rows = json.loads(out.read_text())
    assert [r["image_path"] for r in rows] == [str(tmp_path / "in" / "a.png"), str(tmp_path / "in/deeper/b.PNG")]
    assert all(r["error"] == "" and r["color"] in ("blue", "green", "red") for r in rows)
    assert 0 < rows[0]["color_prob"] <= 1


def test_csv_input_keeps_its_image_paths(trained, tmp_path, capsys):
    run, labels = trained
    assert cli.main(["predict", str(run), str(labels), "--format", "json", "--quiet"]) == 0
    rows = json.loads(capsys.readouterr().out)  # stdout by default
    assert [r["image_path"] for r in rows] == read_table(labels).paths  # as written in the CSV: img/N.png
    other = tmp_path / "list.csv"  # elsewhere, with --images for the paths' folder
    other.write_text("image_path,note\nimg/5.png,x\nimg/missing.png,y\n")
    assert cli.main(["predict", str(run), str(other), "--images", str(labels.parent), "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "image_path,color,color_prob,bright,bright_prob,error"
    assert lines[1].startswith("img/5.png,") and lines[1].endswith(",")
    assert lines[2] == "img/missing.png,,,,,no such file"


def test_nothing_to_predict_exits_2(trained, tmp_path, capsys):
    run, _ = trained
    (tmp_path / "bad.png").write_bytes(b"junk")
    assert cli.main(["predict", str(run), str(tmp_path / "bad.png"), "--quiet"]) == 2
    assert "none of the 1 images could be read" in capsys.readouterr().err
    assert cli.main(["predict", str(run), str(tmp_path / "absent.jpg")]) == 2
    assert "absent.jpg: no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(["predict", str(run), str(tmp_path / "empty")]) == 2
    with pytest.raises(AttrfitError, match="image_path"):
        (tmp_path / "x.csv").write_text("path\na.png\n")
        find_images([str(tmp_path / "x.csv")])


# ---------------------------------------------------------------- predict reproduces evaluate

def test_predicting_the_test_images_reproduces_evaluate(trained, tmp_path):
    run, labels = trained
    scored = score_checkpoint(str(run), side="test", progress=False, device="cpu")
    table = read_table(labels)
    test_paths = load_split(labels.parent / "labels.split.json").sides["test"]
    listing = labels.parent / "test_side.csv"  # beside the labels: same relative image paths
    listing.write_text("image_path\n" + "\n".join(test_paths) + "\n")
    out = tmp_path / "test_pred.csv"
    assert cli.main(["predict", str(run), str(listing), "--out", str(out), "--quiet"]) == 0
    rows = {r["image_path"]: r for r in read_csv(out)}
    row_of = {p: i for i, p in enumerate(table.paths)}
    for j, head in enumerate(table.schema.heads):
        classes = table.schema.classes[head]
        pred = np.array([classes.index(rows[p][head]) for p in scored.paths])
        target = table.labels[[row_of[p] for p in scored.paths], j]
        got = head_metrics(pred, target, len(classes), 0).accuracy
        assert got == scored.results.heads[head].accuracy, head
    # the probabilities too, not just the argmax (batch composition may move the last float bit)
    api = attrfit.load(run).predict([labels.parent / p for p in scored.paths], batch_size=5)
    for head, probs in zip(table.schema.heads, scored.probs):
        np.testing.assert_allclose(api.probs[head], probs, atol=1e-6)
    assert len(set(api.labels["color"])) > 1, "a collapsed model would make this check vacuous"


# ---------------------------------------------------------------- the Python API

def test_api_takes_paths_pil_images_and_arrays(trained, predictor):
    _, labels = trained
    path = labels.parent / "img/4.png"
    rgb = np.array(Image.open(path))
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    p = predictor.predict([str(path), path, Image.open(path), rgb, rgba])
    assert len(p) == 5 and p.heads == ("color", "bright")
    assert p.probs["color"].shape == (5, 3) and p.probs["color"].dtype == np.float32
    for head in p.heads:
        assert (p.probs[head] == p.probs[head][0]).all(), head  # same pixels after preparation, same output
    row = p.rows()[0]
    assert list(row) == ["color", "color_prob", "bright", "bright_prob"]
    assert row["color"] == p.labels["color"][0] and row["color_prob"] == pytest.approx(p.confidence["color"][0])
    # another batch size may move the last float bit (oneDNN), hence allclose below
    single = predictor.predict(path)  # one image in, a Predictions of length 1 out
    assert len(single) == 1
    np.testing.assert_allclose(single.probs["color"], p.probs["color"][:1], atol=1e-6)
    batch = predictor.predict(np.stack([rgb, rgb]))  # N x H x W x 3 uint8
    assert len(batch) == 2
    np.testing.assert_allclose(batch.probs["bright"], p.probs["bright"][:2], atol=1e-6)
    assert len(predictor.predict(rgb[..., 0])) == 1  # grayscale H x W


def test_api_rejects_unreadable_and_wrong_inputs(trained, predictor, tmp_path):
    _, labels = trained
    (tmp_path / "bad.jpg").write_bytes(b"junk")
    with pytest.raises(AttrfitError, match=r"image 1 \(.*bad.jpg\) cannot be read"):
        predictor.predict([labels.parent / "img/0.png", tmp_path / "bad.jpg"])
    with pytest.raises(AttrfitError, match="uint8"):
        predictor.predict(np.zeros((20, 20, 3), np.float32))
    with pytest.raises(AttrfitError, match="cannot predict a int"):
        predictor.predict([3])


def test_pil_images_and_arrays_are_prepared_like_files(predictor, tmp_path):
    """EXIF rotation, alpha, grey and 'pad' letterboxing: a PIL image or array gives the pixels its file gives."""
    padded = dataclasses.replace(predictor, size=(16, 8), resize="pad")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)  # portrait, 30 high
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees when displayed -> landscape, 20 high
    Image.fromarray(a).save(tmp_path / "rot.jpg", exif=exif)
    rgba = np.dstack([a, rng.integers(0, 256, (30, 20), dtype=np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    Image.fromarray(a[..., 0]).save(tmp_path / "grey.png")
    for name in ("rot.jpg", "alpha.png", "grey.png"):
        from_file = padded.prepare(tmp_path / name)
        assert from_file.shape == (16, 8, 3) and from_file.dtype == np.uint8
        assert (padded.prepare(Image.open(tmp_path / name)) == from_file).all(), name
    assert (padded.prepare(rgba) == padded.prepare(tmp_path / "alpha.png")).all()
    assert (padded.prepare(a[..., 0]) == padded.prepare(tmp_path / "grey.png")).all()
    # landscape after EXIF rotation: 8 x 5 pixels of image, 5 grey rows above; unrotated it would start at row 2
    rot = padded.prepare(tmp_path / "rot.jpg")
    assert (rot[:5] == 127).all() and not (rot[5] == 127).all()


def test_batch_size_and_tta(trained, predictor):
    _, labels = trained
    paths = images_of(labels, 12)
    one, many = predictor.predict(paths, batch_size=1), predictor.predict(paths, batch_size=64)
    assert one.labels == many.labels
    np.testing.assert_allclose(one.probs["color"], many.probs["color"], atol=1e-6)
    tta = predictor.predict(paths, tta=True)
    assert not np.allclose(tta.probs["color"], many.probs["color"])
    with pytest.raises(AttrfitError, match="batch_size must be a whole number of at least 1"):
        predictor.predict(paths, batch_size=0)


def test_predictor_carries_the_checkpoint_preprocessing(trained, predictor):
    spec = predictor.spec()
    assert predictor.size == (16, 16) and predictor.resize == "stretch" and predictor.precision == "fp32"
    assert spec["classes"] == {"color": ["blue", "green", "red"], "bright": ["dark", "light"]}
    assert len(spec["mean"]) == 3 and len(spec["std"]) == 3


# ---------------------------------------------------------------- streaming

def test_rows_stream_chunk_by_chunk(trained, predictor, monkeypatch):
    """The first row comes out after at most two chunks were decoded: memory does not grow with N."""
    _, labels = trained
    monkeypatch.setattr(predict, "CHUNK", 4)
    items = [(p, labels.parent / p) for p in read_table(labels).paths]  # 60 images
    decoded = []
    real = Predictor.prepare

    def counting(self, image):
        decoded.append(image)
        return real(self, image)

    monkeypatch.setattr(Predictor, "prepare", counting)
    rows = predict_files(predictor, items, batch_size=2, progress=False)
    first = next(rows)
    assert first["image_path"] == items[0][0] and len(decoded) <= 8
    rest = list(rows)
    assert [r["image_path"] for r in [first, *rest]] == [name for name, _ in items]
    whole = predictor.predict([path for _, path in items])
    assert [r["color"] for r in [first, *rest]] == whole.labels["color"]


def test_other_sizes_and_jpeg_are_resized_like_training(tmp_path, trained):
    """Images of another size and format are resized like training images."""
    run, _ = trained
    csv_path = write_tiny(tmp_path / "other", n=6, size=40, fmt="jpg")
    rows = list(predict_files(attrfit.load(run), find_images([str(csv_path)]), progress=False))
    assert len(rows) == 6 and all(r["error"] == "" for r in rows)
