"""Outputs: never lose, overwrite or half-write a file, and one clear line for impossible places.

A full disk is simulated for real where it can be: the temp file is created in its folder
as usual, but its writes go to ``/dev/full``, where the kernel answers every write with
ENOSPC (tmpfs mounts need root privileges the tests do not assume).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_one_error, cli, write_tiny
from PIL import Image

from attrfit.data import cache

from attrfit.core import files, runs
from attrfit.cli.app import main
from attrfit.core.errors import AttrfitError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--size", "16x16", "--width", "8", "--stages", "2", "--batch-size", "16", "--lr", "0.05", "--seed", "1",
        "--precision", "fp32", "--no-report", "--quiet"]
needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")




def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name) if folder.exists() else []


def full_disk(monkeypatch, only: str = "") -> None:
    """Atomic writes (of files whose name holds ``only``) get a real temp file, but their bytes go to
    /dev/full (ENOSPC from the kernel)."""
    real = files._create

    def create(tmp, text=False, **open_args):
        if only not in tmp.name:
            return real(tmp, text, **open_args)
        real(tmp, text, **open_args).close()
        return open("/dev/full", "w" if text else "wb", **open_args)

    monkeypatch.setattr(files, "_create", create)


@pytest.fixture
def run(trained_tiny, tmp_path) -> Path:
    """A private copy of the session's tiny run (these tests try to overwrite its files)."""
    return Path(shutil.copytree(trained_tiny[0], tmp_path / "run"))


# ---------------------------------------------------------------- 1. the one atomic writer


@pytest.mark.parametrize("exc, raised", [
    (OSError(errno.ENOSPC, "No space left on device"), files.WriteFailed),
    (OSError(errno.EROFS, "Read-only file system"), files.WriteFailed),
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"), files.WriteFailed),
    (RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"), files.WriteFailed),
    (KeyboardInterrupt(), KeyboardInterrupt),
    (ValueError("a bug"), ValueError),  # not a disk problem: keeps its type (and traceback)
])
def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path, exc, raised):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def write(f):
        f.write(b"half of the new")
        raise exc

    with pytest.raises(raised) as info:
        files.atomic_write(target, write, "the thing")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]
    if raised is files.WriteFailed:
        assert str(info.value).startswith(f"cannot write the thing {target}: ") and "\n" not in str(info.value)
        assert "disk is" in str(info.value) and "full" in str(info.value) or "read-only" in str(info.value)


@needs_dev_full
def test_a_real_enospc_is_one_line_and_the_old_file_stays(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    files.write_json(target, {"v": 1})
    full_disk(monkeypatch)
    with pytest.raises(files.WriteFailed, match="No space left on device.*free some space"):
        files.write_json(target, {"v": 2})
    with pytest.raises(files.WriteFailed, match="disk is.*full"):
        files.atomic_write(tmp_path / "t.pt", lambda f: torch.save({"x": torch.zeros(10000)}, f))
    assert json.loads(target.read_text()) == {"v": 1}
    assert os.listdir(tmp_path) == ["results.json"]


def test_writes_replace_atomically_keep_the_mode_and_follow_symlinks(tmp_path):
    real = tmp_path / "real.txt"
    real.write_text("old")
    real.chmod(0o640)
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    files.write_text(link, "new")
    assert link.is_symlink() and real.read_text() == "new"
    assert real.stat().st_mode & 0o777 == 0o640


def test_threads_writing_one_file_at_once_never_collide(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    target = tmp_path / "c.bin"
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: files.write_bytes(target, bytes([i]) * 100_000), range(16)))
    data = target.read_bytes()
    assert len(data) == 100_000 and len(set(data)) == 1  # one writer's bytes, whole
    assert os.listdir(tmp_path) == ["c.bin"]


def test_every_write_goes_through_the_atomic_writer():
    """No module renames temp files by itself (the one helper fsyncs and cleans up); checkpoint.py
    only moves the old last.pt aside, inside the helper's write."""
    for path in (ROOT / "src" / "attrfit").glob("*.py"):
        text = path.read_text()
        allowed = {"files.py": 1, "checkpoint.py": 1}.get(path.name, 0)
        assert text.count("os.replace(") + text.count(".replace(out)") <= allowed, path.name
        assert path.name == "files.py" or (".tmp\"" not in text and ".tmp{" not in text), path.name


# ---------------------------------------------------------------- 2. full disks


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


# ---------------------------------------------------------------- 3. impossible places, found before the work


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


# ---------------------------------------------------------------- 4. --out never replaces an input or a run file


def test_predict_never_replaces_its_input_csv(capsys, run, tiny):
    before = tiny.read_bytes()
    for force in ([], ["--force"]):
        code, _, err = cli(capsys, "predict", run, tiny, "--out", tiny, *force, "--quiet")
        assert_one_error(code, err, "is an input", "never replaced")
    assert tiny.read_bytes() == before


def test_split_never_replaces_its_input_csv(capsys, tiny):
    before = tiny.read_bytes()
    code, _, err = cli(capsys, "split", tiny, "--out", tiny, "--force")
    assert_one_error(code, err, "is an input", "never replaced")
    assert tiny.read_bytes() == before


@pytest.mark.parametrize("name", ["best.pt", "last.pt", "config.json", "metrics.csv"])
def test_export_and_predict_never_replace_a_run_file(capsys, run, tiny, name):
    before = (run / name).read_bytes()
    code, _, err = cli(capsys, "export", run, "--out", run / name, "--format", "torchscript", "--force")
    assert_one_error(code, err, "never replaced")
    code, _, err = cli(capsys, "predict", run, tiny.parent / "img" / "1.png", "--out", run / name, "--force")
    assert_one_error(code, err, "never replaced")
    assert (run / name).read_bytes() == before


def test_existing_outputs_are_replaced_only_with_force(capsys, run, tiny, tmp_path):
    for out, argv in ((tmp_path / "p.csv", ["predict", run, tiny.parent / "img" / "1.png", "--quiet"]),
                      (tmp_path / "m.pt", ["export", run])):
        out.write_text("mine")
        code, _, err = cli(capsys, *argv, "--out", out)
        assert_one_error(code, err, "already exists", "--force")
        assert out.read_text() == "mine"
        assert cli(capsys, *argv, "--out", out, "--force")[0] == 0
        assert out.read_bytes() != b"mine"
    (tmp_path / "n.pt.schema.json").write_text("mine")  # the schema beside an export is protected too
    code, _, err = cli(capsys, "export", run, "--out", tmp_path / "n.pt")
    assert_one_error(code, err, "n.pt.schema.json already exists")
    assert not (tmp_path / "n.pt").exists()


def test_outputs_with_spaces_and_unicode_in_new_folders(capsys, run, tiny, tmp_path):
    folder = tmp_path / "my exports" / "ünï cödé"
    assert cli(capsys, "export", run, "--out", folder / "módel v1.onnx")[0] == 0
    assert (folder / "módel v1.onnx.schema.json").is_file()
    assert cli(capsys, "predict", run, tiny.parent / "img" / "1.png", "--out", folder / "préd s.json", "--quiet")[0] == 0
    assert json.loads((folder / "préd s.json").read_text())[0]["image_path"].endswith("1.png")


# ---------------------------------------------------------------- 5. demo-data never overwrites the user's images


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


# ---------------------------------------------------------------- 6. one process per run folder


def test_a_run_in_use_is_refused_naming_the_pid(capsys, run):
    lock = runs.lock_run(run)
    try:
        before = (run / "metrics.csv").read_bytes()
        code, _, err = cli(capsys, "train", "--resume", run, "--quiet")
        assert_one_error(code, err, f"the run {run} is in use", f"PID {os.getpid()}")
        assert (run / "metrics.csv").read_bytes() == before
    finally:
        lock.release()
    code, _, err = cli(capsys, "train", "--resume", run, "--quiet")  # released: the finished run just reports
    assert code == 0, err


def test_a_new_run_holds_its_lock_while_training(tiny, tmp_path, monkeypatch):
    import attrfit.training.final as final
    import attrfit.training.loop as tr
    from attrfit.recipe.config import TrainConfig, apply

    seen = []
    real = final.score_test_side

    def finish(run, *a, **k):
        with pytest.raises(AttrfitError, match="in use by another attrfit process"):
            runs.lock_run(run)
        seen.append(run)
        return real(run, *a, **k)

    monkeypatch.setattr(final, "score_test_side", finish)
    cfg = apply(TrainConfig(), {"data.csv": str(tiny), "size": "16x16", "width": 8, "stages": 2, "epochs": 1,
                                "batch_size": 16, "lr": 0.05, "report": False, "precision": "fp32"})
    run = tr.fit(cfg, run_dir=tmp_path / "r", progress=False)
    assert seen == [run]
    runs.lock_run(run).release()  # free again once fit returned


def test_a_lock_left_by_a_killed_process_does_not_block(capsys, run):
    code = f"import sys, time; sys.path.insert(0, {str(ROOT / 'src')!r}); from attrfit.core import runs; " \
           f"runs.lock_run({str(run)!r}); print('locked', flush=True); time.sleep(60)"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline().strip() == b"locked"
        with pytest.raises(AttrfitError, match=f"PID {p.pid}"):
            runs.lock_run(run)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert (run / ".lock").exists()  # stale file, no lock: the kernel dropped it with the process
    runs.lock_run(run).release()


def test_new_run_folder_holding_only_a_lock_counts_as_empty(capsys, tiny, tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / ".lock").write_text("12345\n")
    code, _, err = cli(capsys, "train", tiny, *TINY, "--epochs", 1, "--run-dir", tmp_path / "r")
    assert code == 0, err


# ---------------------------------------------------------------- 7. file names that are not UTF-8


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


# ---------------------------------------------------------------- 8. runs work from any folder


def test_run_folder_works_from_another_folder_and_says_where_a_path_came_from(capsys, tmp_path, monkeypatch):
    write_tiny(tmp_path / "proj" / "data", n=30)
    monkeypatch.chdir(tmp_path / "proj")
    assert cli(capsys, "train", "data/labels.csv", *TINY, "--epochs", 1, "--run-dir", "runs/a")[0] == 0
    config = json.loads((tmp_path / "proj" / "runs" / "a" / "config.json").read_text())
    assert config["data"]["csv"] == str(tmp_path / "proj" / "data" / "labels.csv")
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "evaluate", "proj/runs/a")
    assert code == 0 and "MEAN" in out, err
    (tmp_path / "proj" / "data").rename(tmp_path / "moved")
    code, _, err = cli(capsys, "evaluate", "proj/runs/a")
    assert_one_error(code, err, f"labels CSV {tmp_path / 'proj' / 'data' / 'labels.csv'} recorded in",
                     "best.pt", "--csv NEW.csv")
    assert cli(capsys, "evaluate", "proj/runs/a", "--csv", tmp_path / "moved" / "labels.csv")[0] == 0


def test_an_old_run_with_relative_paths_names_the_file_they_came_from(capsys, tmp_path, monkeypatch):
    write_tiny(tmp_path / "proj" / "data", n=30)
    monkeypatch.chdir(tmp_path / "proj")
    assert cli(capsys, "train", "data/labels.csv", *TINY, "--epochs", 1, "--run-dir", "r")[0] == 0
    config = json.loads(Path("r/config.json").read_text())
    config["data"]["csv"] = "data/labels.csv"  # as runs made before paths were stored absolute
    Path("r/config.json").write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "train", "--resume", "proj/r", "--quiet")
    assert_one_error(code, err, "labels CSV data/labels.csv recorded in proj/r/config.json",
                     f"relative path looked up from {tmp_path}", "run from the folder the run was started in")


# ---------------------------------------------------------------- 9. the image cache key


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


# ---------------------------------------------------------------- more of the same kind


def test_two_runs_started_in_the_same_second_get_two_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda fmt: "20260101-000000")
    a, b = runs.new_run_dir(None, "labels.csv"), runs.new_run_dir(None, "labels.csv")
    assert (a.name, b.name) == ("20260101-000000-labels", "20260101-000000-labels-2")
    monkeypatch.chdir(tmp_path / "runs")
    Path("runs").write_text("a file")
    with pytest.raises(AttrfitError, match="runs is a file, not a folder"):
        runs.new_run_dir(None, "labels.csv")


def test_train_log_on_a_full_disk_steps_aside_without_tracebacks(tmp_path, capsys, caplog):
    import logging

    handler = runs.add_file_log(tmp_path)
    try:
        handler.stream = open("/dev/full", "w") if os.path.exists("/dev/full") else pytest.skip("needs /dev/full")
        logging.getLogger("attrfit.test").warning("epoch 1 done")
        logging.getLogger("attrfit.test").warning("epoch 2 done")
    finally:
        logging.getLogger("attrfit").removeHandler(handler)
        handler.close()
    assert "Traceback" not in capsys.readouterr().err
    assert caplog.text.count("cannot write") == 1 and "train.log any more" in caplog.text


# ---------------------------------------------------------------- 5. one output policy, every command

# Every option of every command that names something to write: (command, option). A new output option
# must be added here, and so gets the checks below.
FILE_OUTPUTS = {("split", "--out"), ("report", "--out"), ("compare", "--html"), ("predict", "--out"),
                ("export", "--out"), ("audit-labels", "--out"), ("audit-labels", "--html")}
FOLDER_OUTPUTS = {("lr-find", "--out"), ("demo-data", "out_dir"), ("demo", "--out"), ("train", "--run-dir"),
                  ("dataset", "--out")}
NOT_OUTPUTS = {("train", "--resume"), ("train", "--config"), ("lr-find", "--config"), ("audit-labels", "--config"),
               ("predict", "--images"), ("evaluate", "--csv")}


def _path_options() -> set[tuple[str, str]]:
    """(command, option) for every option whose value is a path the command may write (by its name)."""
    from attrfit.cli.app import build_parser

    found = set()
    for name, p in build_parser().commands.items():
        for a in p._actions:
            label = a.option_strings[0] if a.option_strings else a.dest
            if re.search(r"(^|_)(out|html|dir)$", a.dest or "") and not a.dest.endswith("cache_dir"):
                found.add((name, label))
    return found


def test_every_output_option_is_under_the_policy():
    assert _path_options() == FILE_OUTPUTS | FOLDER_OUTPUTS, "an output option the policy tests do not cover"


@pytest.fixture
def second_run(tmp_path, trained_tiny) -> Path:
    return Path(shutil.copytree(trained_tiny[0], tmp_path / "other_run"))


def _argv(command: str, run: Path, csv: Path) -> list:
    """A command line of ``command`` that would write its output, reading ``run`` (and its CSV)."""
    image = csv.parent / "img" / "1.png"
    return {"split": ["split", csv], "report": ["report", run, "--quiet"], "compare": ["compare", run, run / "last.pt"],
            "predict": ["predict", run, image, "--quiet"], "export": ["export", run, "--format", "torchscript"],
            "audit-labels": ["audit-labels", csv, "--size", "16x16", "--quiet"]}[command]


@pytest.mark.parametrize("command, option", sorted(FILE_OUTPUTS))
def test_no_output_replaces_an_input_a_run_file_or_without_force_any_file(capsys, run, second_run, tmp_path,
                                                                        command, option):
    from attrfit.core.runs import read_json

    csv = Path(read_json(run / "config.json")["data"]["csv"])
    if command in ("split", "audit-labels"):
        csv = Path(shutil.copytree(csv.parent, tmp_path / "data")) / csv.name  # a private table to split
        cli(capsys, "split", csv)
    mine = tmp_path / "notes.txt"
    mine.write_text("mine")
    split_file = csv.with_suffix(".split.json")  # what 'split --force' replaces; an input of the others
    inputs = [csv, csv.parent / "img" / "1.png"] + ([split_file] if command != "split" else [])
    for target, force, needle in ([(p, ["--force"], "is an input") for p in inputs]
                                  + [(second_run / "best.pt", ["--force"], "is a file of the run"),
                                     (second_run / "lr_find" / "lr_find.json", ["--force"], "is a file of the run"),
                                     (mine, [], "already exists")]):
        if not target.exists():
            target.parent.mkdir(exist_ok=True)
            target.write_text("{}")
        before = target.read_bytes()
        code, _, err = cli(capsys, *_argv(command, run, csv), option, target, *force)
        assert_one_error(code, err, needle)
        assert target.read_bytes() == before, (command, option, target)


@pytest.mark.parametrize("command, option", sorted(FOLDER_OUTPUTS))
def test_no_command_writes_into_a_run_folder(capsys, run, command, option):
    csv = Path(runs.read_json(run / "config.json")["data"]["csv"])
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    argv = {"lr-find": ["lr-find", csv, "--size", "16x16", "--force", "--quiet"], "demo-data": ["demo-data", "--force"],
            "demo": ["demo", "--quiet"], "train": ["train", csv, "--quiet"],
            "dataset": ["dataset", "market1501", csv, "--force"]}[command]
    for target in (run, run / "lr_find"):
        argv_out = [*argv, target] if option == "out_dir" else [*argv, option, target]
        code, _, err = cli(capsys, *argv_out)
        assert_one_error(code, err, "run")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_report_never_empties_a_folder_of_pictures_it_did_not_make(capsys, run, tmp_path):
    pictures = tmp_path / "holiday_files"
    pictures.mkdir()
    (pictures / "beach.png").write_bytes(b"\x89PNG mine")
    code, _, err = cli(capsys, "report", run, "--out", tmp_path / "holiday.html", "--quiet")
    assert_one_error(code, err, "holds files a report did not write")
    assert (pictures / "beach.png").read_bytes() == b"\x89PNG mine"
    assert cli(capsys, "report", run, "--out", tmp_path / "r.html", "--quiet")[0] == 0
    assert cli(capsys, "report", run, "--out", tmp_path / "r.html", "--quiet", "--force")[0] == 0  # its own figures


def test_report_without_out_remakes_its_own_page(capsys, run):
    assert cli(capsys, "report", run, "--quiet")[0] == 0
    assert cli(capsys, "report", run, "--quiet")[0] == 0  # RUN/report.html is the report's own, no --force needed
