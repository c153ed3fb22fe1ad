"""Nothing lost on disk: full disks, impossible places found before the work, the demo's folder, names that are
not UTF-8, the image cache's key. A full disk is simulated for real where it can be: the temp file is created in
its folder as usual, but its writes go to ``/dev/full``, where the kernel answers every write with ENOSPC."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_one_error, cli, full_disk, temps, write_tiny
from PIL import Image

from attrfit.data import cache

from attrfit.cli.app import main

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--size", "16x16", "--width", "8", "--stages", "2", "--batch-size", "16", "--lr", "0.05", "--seed", "1",
        "--precision", "fp32", "--no-report", "--quiet"]
needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")


@needs_dev_full
def test_image_cache_on_a_full_disk_is_skipped_cleanly(tiny, tmp_path, monkeypatch, caplog):
    from attrfit.data.table import read_table

    table = read_table(tiny)
    full_disk(monkeypatch)
    c = cache.load_or_build(table.paths, table.abs_paths(), (16, 16), cache_dir=tmp_path / "c", progress=False)
    assert c.images.shape == (60, 3, 16, 16)
    assert "could not write the image cache" in caplog.text and "No space left on device" in caplog.text
    assert os.listdir(tmp_path / "c") == []


def test_image_cache_when_torch_save_fails_mid_file(tiny, tmp_path, monkeypatch, caplog):
    """torch.save on a full disk raises RuntimeError, not OSError, after writing part of the file."""
    from attrfit.data.table import read_table

    def save(obj, f):
        f.write(b"PK\x03\x04 part of a zip")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    table = read_table(tiny)
    monkeypatch.setattr(torch, "save", save)
    c = cache.load_or_build(table.paths, table.abs_paths(), (16, 16), cache_dir=tmp_path / "c", progress=False)
    assert c.images.shape == (60, 3, 16, 16) and "could not write the image cache" in caplog.text
    assert os.listdir(tmp_path / "c") == []


@needs_dev_full
@pytest.mark.parametrize("name", ["m.onnx", "m.pt"])
def test_export_on_a_full_disk(capsys, run, tmp_path, monkeypatch, name):
    out = tmp_path / "exports"
    assert cli(capsys, "export", run, "--out", out / name)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    full_disk(monkeypatch)
    code, _, err = cli(capsys, "export", run, "--out", out / name, "--force")
    assert_one_error(code, err, "cannot write", str(out), "No space left on device")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the earlier export, whole; no temp files


@needs_dev_full
def test_predict_on_a_full_disk(capsys, run, tiny, tmp_path, monkeypatch):
    out = tmp_path / "p.csv"
    out.write_text("earlier predictions\n")
    full_disk(monkeypatch)
    code, _, err = cli(capsys, "predict", run, tiny.parent / "img", "--out", out, "--force", "--quiet")
    assert_one_error(code, err, "cannot write the predictions", "No space left on device")
    assert out.read_text() == "earlier predictions\n" and temps(tmp_path) == []


def test_predict_interrupted_leaves_no_half_file(capsys, run, tiny, tmp_path, monkeypatch):
    import attrfit.cli.predict as predict

    def rows(*a, **k):
        yield {"image_path": "x", "color": "red", "color_prob": 0.5, "bright": "dark", "bright_prob": 0.5, "error": ""}
        raise KeyboardInterrupt

    monkeypatch.setattr(predict, "predict_files", rows)
    code, _, err = cli(capsys, "predict", run, tiny.parent / "img", "--out", tmp_path / "p.csv", "--quiet")
    assert code == 130 and not (tmp_path / "p.csv").exists() and temps(tmp_path) == []


@pytest.fixture
def a_file(tmp_path) -> Path:
    (tmp_path / "a_file").write_text("mine")
    return tmp_path / "a_file"


@pytest.mark.parametrize("where, needles", [
    (lambda f: f / "x.onnx", ["a_file is a file, not a folder"]),
    (lambda f: Path("/proc/x.onnx"), ["cannot write the exported model in /proc"]),
    (lambda f: Path("/proc/sys/x.pt"), ["cannot write the exported model in /proc/sys"]),
    (lambda f: f.parent, ["is a folder; give the name of a file"]),
])
def test_export_to_an_impossible_place(capsys, run, a_file, monkeypatch, where, needles):
    import attrfit.serving.export as ex

    monkeypatch.setattr(ex.Predictor, "from_checkpoint", lambda *a, **k: pytest.fail("checked after loading"))
    code, _, err = cli(capsys, "export", run, "--out", where(a_file), "--format", "onnx")
    assert_one_error(code, err, *needles)
    assert a_file.read_text() == "mine"


def test_predict_to_an_impossible_place(capsys, run, tiny, a_file, monkeypatch):
    import attrfit.serving.predict as pr

    monkeypatch.setattr(pr.Predictor, "from_checkpoint", lambda *a, **k: pytest.fail("checked after loading"))
    code, _, err = cli(capsys, "predict", run, tiny.parent / "img", "--out", a_file / "p.csv")
    assert_one_error(code, err, "a_file is a file, not a folder")
    code, _, err = cli(capsys, "predict", run, tiny.parent / "img", "--out", a_file.parent)
    assert_one_error(code, err, "is a folder")


def test_run_dir_naming_a_file_fails_before_the_data_is_read(capsys, tiny, a_file, tmp_path):
    for run_dir in (a_file, a_file / "run"):
        code, _, err = cli(capsys, "train", tiny, *TINY, "--epochs", 1, "--run-dir", run_dir)
        assert_one_error(code, err, "--run-dir", "is a file, not a folder")
    assert a_file.read_text() == "mine"
    assert not (tmp_path / "cache").exists()  # nothing was decoded
    assert not (tiny.parent / "labels.split.json").exists()


def test_cache_dir_naming_a_file(capsys, tiny, a_file, monkeypatch):
    code, _, err = cli(capsys, "prepare", tiny, "--size", "16x16", "--cache-dir", a_file)
    assert_one_error(code, err, "--cache-dir", "is a file, not a folder")
    monkeypatch.setenv("ATTRFIT_CACHE_DIR", str(a_file))
    code, _, err = cli(capsys, "prepare", tiny, "--size", "16x16")
    assert_one_error(code, err, "$ATTRFIT_CACHE_DIR", "is a file, not a folder")
    assert a_file.read_text() == "mine"


def test_lr_find_out_in_an_impossible_place(capsys, tiny, a_file, monkeypatch):
    import attrfit.data.load

    monkeypatch.setattr(attrfit.data.load, "load_data", lambda *a, **k: pytest.fail("checked after loading"))
    code, _, err = cli(capsys, "lr-find", tiny, "--size", "16x16", "--out", a_file / "lr", "--quiet")
    assert_one_error(code, err, "a_file is a file, not a folder")
    code, _, err = cli(capsys, "lr-find", tiny, "--size", "16x16", "--out", "/proc/lr", "--quiet")
    assert_one_error(code, err, "cannot write the LR range test folder /proc/lr")


def test_report_out_in_an_impossible_place_or_on_a_run_file(capsys, run, a_file, monkeypatch):
    import attrfit.cli.report as rp

    monkeypatch.setattr(rp, "make_report", lambda *a, **k: pytest.fail("checked after scoring"))
    code, _, err = cli(capsys, "report", run, "--out", a_file / "r.html")
    assert_one_error(code, err, "a_file is a file, not a folder")
    code, _, err = cli(capsys, "report", run, "--out", a_file.parent)
    assert_one_error(code, err, "is a folder")
    code, _, err = cli(capsys, "report", run, "--out", run / "config.json")
    assert_one_error(code, err, "never replaced")


def test_demo_data_refuses_a_folder_with_other_images(capsys, tmp_path):
    from attrfit.data.demo import make_demo

    user = tmp_path / "mine"
    (user / "resized").mkdir(parents=True)
    (user / "resized" / "1.jpg").write_bytes(b"my photo")
    (user / "hvc_annotations.csv").write_text("image_path,gender\nresized/1.jpg,male\n")
    code, _, err = cli(capsys, "demo-data", user, "--n", 10, "--size", "32x32")
    assert_one_error(code, err, "already holds files", "hvc_annotations.csv", "force")
    assert (user / "resized" / "1.jpg").read_bytes() == b"my photo" and not (user / "annotations.csv").exists()
    assert cli(capsys, "demo-data", user, "--n", 10, "--size", "32x32", "--force")[0] == 0
    assert (user / "resized" / "1.jpg").read_bytes() != b"my photo"
    # an interrupted demo (its marker, images, no CSV) may be written again without force
    demo = tmp_path / "demo"
    (demo / "resized").mkdir(parents=True)
    (demo / ".attrfit-demo").write_text("")
    (demo / "resized" / "3.jpg").write_bytes(b"half")
    make_demo(demo, n=10, size=(32, 32))
    assert Image.open(demo / "resized" / "3.jpg").size == (32, 32)
    assert temps(tmp_path) == []


@needs_dev_full
def test_demo_data_on_a_full_disk(capsys, tmp_path, monkeypatch):
    from attrfit.data import demo

    drawn = []
    real = demo.render_person
    monkeypatch.setattr(demo, "render_person", lambda *a: drawn.append(1) or real(*a))
    full_disk(monkeypatch, only=".jpg")
    code, _, err = cli(capsys, "demo-data", tmp_path / "d", "--n", 400, "--size", "32x32")
    assert_one_error(code, err, "cannot write the demo image", "No space left on device")
    assert len(drawn) < 100  # the queued images were dropped, not drawn
    assert temps(tmp_path) == [] and list((tmp_path / "d" / "resized").iterdir()) == []
    assert not (tmp_path / "d" / "annotations.csv").exists()


@pytest.mark.skipif(sys.platform != "linux", reason="Linux file names are bytes")
def test_predictions_for_names_that_are_not_utf8(capsys, run, tiny, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    name = os.fsdecode(b"caf\xe9 \xff.png")  # Latin-1 bytes: not UTF-8
    shutil.copy(tiny.parent / "img" / "1.png", folder / name)
    assert cli(capsys, "predict", run, folder, "--out", tmp_path / "p.csv", "--quiet")[0] == 0
    raw = (tmp_path / "p.csv").read_bytes()
    assert b"caf\xe9 \xff.png," in raw  # the name's own bytes
    assert cli(capsys, "predict", run, folder, "--out", tmp_path / "p.json", "--quiet")[0] == 0
    rows = json.loads((tmp_path / "p.json").read_text())
    assert os.fsencode(rows[0]["image_path"]).endswith(b"caf\xe9 \xff.png")
    # the CSV of predictions is itself a valid input: the names round-trip
    assert cli(capsys, "predict", run, tmp_path / "p.csv", "--images", "/", "--out", tmp_path / "q.csv")[0] == 0


@pytest.mark.skipif(sys.platform != "linux", reason="Linux file names are bytes")
def test_predictions_on_stdout_for_names_that_are_not_utf8(capsysbinary, run, tiny, tmp_path):
    path = tmp_path / os.fsdecode(b"\xff.png")
    shutil.copy(tiny.parent / "img" / "1.png", path)
    assert main(["predict", str(run), str(path)]) == 0
    out, err = capsysbinary.readouterr()
    assert os.fsencode(path) + b"," in out and b"Traceback" not in err


@pytest.mark.skipif(sys.platform != "linux", reason="Linux file names are bytes")
def test_data_folder_whose_name_is_not_utf8(capsysbinary, tmp_path):
    csv_path = write_tiny(tmp_path / os.fsdecode(b"d\xfa"), n=30)
    run = tmp_path / os.fsdecode(b"r\xfb")
    code = main([str(a) for a in ("train", csv_path, *TINY[:-2], "--epochs", 1, "--quiet", "--run-dir", run)])
    out, err = capsysbinary.readouterr()
    assert code == 0 and b"Traceback" not in err and b"Logging error" not in err, err
    assert b"run folder: " + os.fsencode(run) in out and (run / "report.html").is_file()


def test_image_replaced_with_same_size_and_mtime_is_decoded_again(tmp_path):
    """What ``cp -p new.bmp old.bmp`` and ``rsync -a`` do: same size, same mtime, other pixels."""
    path = tmp_path / "a.bmp"
    Image.fromarray(np.full((8, 8, 3), 10, np.uint8)).save(path)
    first = cache.load_or_build(["a.bmp"], [path], (8, 8), cache_dir=tmp_path / "c", progress=False)
    st = path.stat()
    time.sleep(0.01)  # a later ctime
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    second = cache.load_or_build(["a.bmp"], [path], (8, 8), cache_dir=tmp_path / "c", progress=False)
    assert int(first.images.max()) == 10 and int(second.images.min()) == 200


def test_two_processes_building_one_cache_at_once(tiny, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "ATTRFIT_CACHE_DIR": str(tmp_path / "c"),
           "ATTRFIT_PROGRESS": "0"}
    split = tmp_path / "s.json"
    assert main(["split", str(tiny), "--out", str(split)]) == 0
    cmd = [sys.executable, "-m", "attrfit", "prepare", str(tiny), "--size", "16x16", "--split", str(split)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and b"images (60, 3, 16, 16)" in out, err
    assert len(os.listdir(tmp_path / "c")) == 1 and temps(tmp_path / "c") == []
