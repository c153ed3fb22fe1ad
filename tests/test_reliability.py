"""Kill and resume, Ctrl-C, divergence, full disks, and bad input at the command line.

The process tests start real ``attrfit train`` processes and stop them with SIGKILL and
SIGINT (helpers shared with ``bench/soak.py``). The rest call ``attrfit.cli.app.main`` in
this process: every bad input must give exactly one ``attrfit: error:`` line, exit 2, no
traceback, and leave nothing a later run could take for good output.
"""

from __future__ import annotations

import builtins
import errno
import importlib.util
import os
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import attrfit.training.losses
import attrfit.training.trainer
from attrfit.model import checkpoint

from attrfit.core import listing, runs
from conftest import assert_one_error, cli

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_soak", ROOT / "bench" / "soak.py")
soak = sys.modules["bench_soak"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(soak)

TINY = ["--size", "16x16", "--width", "8", "--stages", "2", "--batch-size", "16", "--lr", "0.05", "--seed", "1",
        "--precision", "fp32", "--no-report", "--quiet"]




def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


# ---------------------------------------------------------------- real processes: SIGKILL, SIGINT

EPOCHS = 8  # 32 steps: a Ctrl-C sent right after a checkpoint lands well before the end


@pytest.fixture(scope="module")
def procs(tmp_path_factory):
    """Tiny data and one uninterrupted reference run, made by a real process."""
    work = tmp_path_factory.mktemp("procs")
    csv_path = soak.make_data(work / "data", n=64)
    env = soak.child_env(work / "cache")
    r = subprocess.run(soak.train_cmd(csv_path, work / "ref", EPOCHS), env=env, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return work, csv_path, env


def start(cmd, env, log: Path) -> subprocess.Popen:
    with open(log, "wb") as f:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=f, env=env)


def test_sigkill_inside_a_checkpoint_write_then_corrupt_then_sigint_resumes_exactly(procs):
    work, csv_path, env = procs
    run = work / "chain"
    # 1. SIGKILL the moment a checkpoint write has its temp file open (once there are two to fall back on)
    p = start(soak.train_cmd(csv_path, run, EPOCHS), env, work / "1.log")
    assert soak.wait_for(p, lambda: (run / "last.prev.pt").is_file(), 120), (work / "1.log").read_text()
    assert soak.wait_for(p, lambda: bool(soak.checkpoint_temps(run)), 60, poll=0.0002)
    p.kill()
    p.wait()
    assert soak.check_after_kill(run) == []
    checkpoint.load_with_fallback(run / "last.pt")  # something good to resume from

    # 2. damage the newest checkpoint: the resume reports it and falls back to last.prev.pt;
    #    then Ctrl-C as soon as it has written a checkpoint of its own
    # (the kill may land between the two renames of a write, leaving no last.pt: damage a copy of the previous)
    newest = run / "last.pt" if (run / "last.pt").is_file() else run / "last.prev.pt"
    data = newest.read_bytes()
    (run / "last.pt").write_bytes(data[: len(data) // 2])
    before = soak.mtime(run / "last.pt")
    p = start(soak.resume_cmd(run), env, work / "2.log")
    assert soak.wait_for(p, lambda: soak.mtime(run / "last.pt") != before, 120), (work / "2.log").read_text()
    p.send_signal(signal.SIGINT)
    assert p.wait(60) == 130, (work / "2.log").read_text()
    err = (work / "2.log").read_text()
    assert "Traceback" not in err, err
    assert "checksum mismatch" in err and "falling back to the previous checkpoint" in err, err
    last = err.rstrip().splitlines()[-1]  # one line that says how to go on
    assert last.startswith("attrfit: interrupted") and last.endswith(f"attrfit train --resume {run}"), err
    assert checkpoint.load(run / "last.pt")["progress"]["step"] > 0
    assert not (run / "results.json").exists()

    # 3. the last resume ends exactly where the uninterrupted run ended
    p = start(soak.resume_cmd(run), env, work / "3.log")
    assert p.wait(300) == 0, (work / "3.log").read_text()
    assert soak.compare_runs(work / "ref", run) == []  # float64 loss sums: exact even across Ctrl-C
    assert not soak.checkpoint_temps(run)


def test_soak_quick():
    """bench/soak.py --quick: 3 SIGKILLs at random moments, resumed, bit-identical to the uninterrupted run."""
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "soak.py"), "--quick", "--seed", "1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "soak: IDENTICAL: 3/3" in r.stdout, r.stdout + r.stderr


# ---------------------------------------------------------------- in-process failures of a run

class Crash(Exception):
    pass


def diverge(capsys, csv_path, run, monkeypatch):
    """The loss turns NaN at the 4th step, at --lr 100 (a plausible LR range test pick gone wrong).

    Real divergence is CPU arithmetic (and --lr is capped at 100, where BatchNorm nets on the tiny
    task stay finite), so the NaN is planted in the loss: the checks and messages are under test.
    """
    import attrfit.training.loop

    real, calls = attrfit.training.losses.multi_head_loss, []

    def loss_going_nan(*args, **kwargs):
        calls.append(1)
        total, per_head = real(*args, **kwargs)
        return (total * float("nan"), per_head * float("nan")) if len(calls) >= 4 else (total, per_head)

    monkeypatch.setattr(attrfit.training.losses, "multi_head_loss", loss_going_nan)
    # --mixup 0: mixup computes the loss twice a step, and the count below is of steps
    return cli(capsys, "train", csv_path, *TINY, "--epochs", 2, "--lr", 100, "--schedule", "constant",
               "--checkpoint-every", 1, "--mixup", 0, "--run-dir", run)


def test_divergence_is_one_clear_line(capsys, tiny, tmp_path, monkeypatch):
    code, out, err = diverge(capsys, tiny, tmp_path / "r", monkeypatch)
    assert_one_error(code, err, "by step", "lr 100", "Training stopped", "Lower --lr", "last good checkpoint")
    assert not (tmp_path / "r" / "results.json").exists()


def test_divergence_before_any_checkpoint_says_so_records_it_and_refuses_a_resume(capsys, tiny, tmp_path,
                                                                                    monkeypatch):
    """NaN at step 2, before any checkpoint: the error does not promise a checkpoint that is not there;
    train.log and failed.json keep the failure; 'attrfit runs' lists it as failed; --resume, which would
    repeat the same steps, is refused with what to do instead."""
    import attrfit.training.trainer

    real = attrfit.training.losses.multi_head_loss
    calls = []

    def loss_going_nan(*args, **kwargs):
        calls.append(1)
        total, per_head = real(*args, **kwargs)
        return (total * float("nan"), per_head * float("nan")) if len(calls) >= 2 else (total, per_head)

    monkeypatch.setattr(attrfit.training.losses, "multi_head_loss", loss_going_nan)
    run = tmp_path / "r"
    code, _, err = cli(capsys, "train", tiny, *TINY, "--epochs", 2, "--mixup", 0, "--run-dir", run)
    line = assert_one_error(code, err, "loss became nan", "no checkpoint had been written yet", "new run")
    assert "checkpoint is kept" not in line and not (run / "last.pt").exists()
    assert "loss became nan" in (run / "train.log").read_text()
    failure = runs.Failure.read(run)
    assert failure.kind == "diverged" and failure.epoch == 0 and not failure.checkpoint
    (summary,) = listing.list_runs(run)
    assert summary.state == "failed" and "loss became nan" in summary.detail and "new run" in summary.detail
    code, _, err = cli(capsys, "train", "--resume", run)
    assert_one_error(code, err, "fails the same way", "new run")


def test_a_resume_after_a_failure_that_was_not_divergence_goes_on_and_clears_it(capsys, tiny, tmp_path):
    run = tmp_path / "r"
    assert cli(capsys, "train", tiny, *TINY, "--epochs", 1, "--run-dir", run)[0] == 0
    (run / "results.json").unlink()
    runs.Failure("error", "cannot write best.pt: the disk is full", 1, 3, True).write(run)
    assert listing.list_runs(run)[0].state == "failed"
    assert cli(capsys, "train", "--resume", run)[0] == 0
    assert runs.Failure.read(run) is None and listing.list_runs(run)[0].state == "finished"


def test_divergence_keeps_the_last_good_checkpoint(capsys, tiny, tmp_path, monkeypatch):
    diverge(capsys, tiny, tmp_path / "r", monkeypatch)
    for name in ("last.pt", "last.prev.pt", "best.pt"):  # all three are written before the NaN at step 4
        ckpt = checkpoint.load(tmp_path / "r" / name)
        assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point()), name


@pytest.mark.parametrize("where", ["checkpoint", "metrics"])
def test_disk_full_mid_run_is_one_line_and_resumable(capsys, tiny, tmp_path, monkeypatch, where):
    run = tmp_path / "r"
    real_fsync, real_replace = os.fsync, os.replace
    calls = {"fsync": 0, "metrics": 0}

    def fsync(fd):  # the third checkpoint write hits a full disk
        calls["fsync"] += ".pt.tmp" in os.readlink(f"/proc/self/fd/{fd}")
        if calls["fsync"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    def replace(src, dst):  # writing epoch 2's row of metrics.csv hits a full disk
        if Path(dst).name == "metrics.csv":
            calls["metrics"] += 1
            if calls["metrics"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync" if where == "checkpoint" else "replace",
                        fsync if where == "checkpoint" else replace)
    code, out, err = cli(capsys, "train", tiny, *TINY, "--epochs", 3, "--checkpoint-every", 1, "--run-dir", run)
    assert_one_error(code, err, "No space left on device", "--resume")
    assert not [p for p in run.iterdir() if ".tmp" in p.name]
    assert not (run / "results.json").exists()
    checkpoint.load(run / "last.pt")  # the previous checkpoint is intact
    monkeypatch.undo()
    code, out, err = cli(capsys, "train", "--resume", run, "--quiet")
    assert code == 0, err
    assert [int(r["epoch"]) for r in runs.MetricsLog(run / "metrics.csv").rows()] == [1, 2, 3]


def test_out_of_memory_gives_advice(capsys, tiny, tmp_path, monkeypatch):

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(attrfit.training.trainer, "train_step", oom)
    code, out, err = cli(capsys, "train", tiny, *TINY, "--epochs", 1, "--run-dir", tmp_path / "r")
    assert_one_error(code, err, "out of memory", "--batch-size")


def test_killed_after_first_epoch_row_before_any_checkpoint(tiny, tmp_path, monkeypatch):
    from attrfit.recipe.config import TrainConfig, apply
    from attrfit.training.loop import fit

    cfg = apply(TrainConfig(), {"data.csv": str(tiny), "size": "16x16", "width": 8, "stages": 2, "epochs": 2,
                                "batch_size": 16, "lr": 0.05, "report": False, "seed": 1, "precision": "fp32"})
    real_save = checkpoint.save

    def crash(*a, **k):  # dies after metrics.csv got epoch 1's row, before best.pt/last.pt exist
        raise Crash()

    monkeypatch.setattr(checkpoint, "save", crash)
    with pytest.raises(Crash):
        fit(cfg, run_dir=tmp_path / "r", progress=False)
    monkeypatch.setattr(checkpoint, "save", real_save)
    fit(None, resume=tmp_path / "r", progress=False)
    assert [int(r["epoch"]) for r in runs.MetricsLog(tmp_path / "r" / "metrics.csv").rows()] == [1, 2]


def test_killed_before_the_first_checkpoint_can_resume(tiny, tmp_path, monkeypatch):
    import attrfit.training.loop as tr
    from attrfit.recipe.config import TrainConfig, apply

    cfg = apply(TrainConfig(), {"data.csv": str(tiny), "size": "16x16", "width": 8, "stages": 2, "epochs": 1,
                                "batch_size": 16, "lr": 0.05, "report": False, "precision": "fp32"})
    real = tr.build_trainer

    def crash(*a, **k):  # the run folder exists; nothing else is written yet (an LR range test runs here)
        raise Crash()

    monkeypatch.setattr(tr, "build_trainer", crash)
    with pytest.raises(Crash):
        tr.fit(cfg, run_dir=tmp_path / "r", progress=False)
    monkeypatch.setattr(tr, "build_trainer", real)
    tr.fit(None, resume=tmp_path / "r", progress=False)
    assert (tmp_path / "r" / "results.json").is_file()


# ---------------------------------------------------------------- read-only places

def make_read_only(folder: Path, monkeypatch) -> None:
    """chmod when that stops writes; as root (where it does not) refuse writes under ``folder`` by patching."""
    if os.geteuid() != 0:
        folder.chmod(0o555)  # restored by the restore_modes fixture
        return

    def refuse(path):
        if Path(path).resolve().is_relative_to(folder.resolve()):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))

    real_mkdir, real_write_text, real_open = Path.mkdir, Path.write_text, builtins.open

    def mkdir(self, *a, **k):
        refuse(self)
        return real_mkdir(self, *a, **k)

    def write_text(self, *a, **k):
        refuse(self)
        return real_write_text(self, *a, **k)

    def open_(file, mode="r", *a, **k):
        if isinstance(file, (str, Path)) and any(c in mode for c in "wax+"):
            refuse(file)
        return real_open(file, mode, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(Path, "write_text", write_text)
    monkeypatch.setattr(builtins, "open", open_)


@pytest.fixture
def restore_modes(tmp_path):
    yield
    for p in [tmp_path, *tmp_path.rglob("*")]:
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o755)


def test_read_only_run_folder(capsys, tiny, tmp_path, monkeypatch, restore_modes):
    out = tmp_path / "out"
    out.mkdir()
    make_read_only(out, monkeypatch)
    code, _, err = cli(capsys, "train", tiny, *TINY, "--epochs", 1, "--run-dir", out / "run")
    assert_one_error(code, err, "cannot write to the run folder", str(out / "run"))
    assert visible(out) in ([], ["run"]) and visible(out / "run") == []


def test_read_only_data_folder_needs_a_split_elsewhere_and_cache_is_optional(capsys, caplog, tiny, tmp_path,
                                                                              monkeypatch, restore_modes):
    make_read_only(tiny.parent, monkeypatch)
    code, _, err = cli(capsys, "prepare", tiny, "--size", "16x16")
    assert_one_error(code, err, "cannot write the split file", "--split")
    cache = tmp_path / "ro-cache"
    cache.mkdir()
    make_read_only(cache, monkeypatch)
    code, out, err = cli(capsys, "prepare", tiny, "--size", "16x16", "--split", tmp_path / "s.json",
                         "--cache-dir", cache)
    assert code == 0 and "images (60, 3, 16, 16)" in out, err
    assert "could not write the image cache" in caplog.text and "Traceback" not in err


# ---------------------------------------------------------------- bad input, one line each

def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that claims width x height pixels (a decompression bomb) but holds no image data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))


def break_missing(root: Path) -> None:
    (root / "img" / "7.png").unlink()


def break_truncated_jpeg(root: Path) -> None:
    p = root / "img" / "7.png"
    Image.open(p).convert("RGB").resize((64, 64)).save(root / "j.jpg", format="JPEG")
    p.write_bytes((root / "j.jpg").read_bytes()[:300])


def break_corrupt_jpeg(root: Path) -> None:
    (root / "img" / "7.png").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)


def break_zero_bytes(root: Path) -> None:
    (root / "img" / "7.png").write_bytes(b"")


def break_huge(root: Path) -> None:
    png_header_only(root / "img" / "7.png", 30000, 30000)


@pytest.mark.parametrize("damage, needles", [
    (break_missing, ["1 of 60 image files", "missing", "img/7.png"]),
    (break_truncated_jpeg, ["1 of 60 images cannot be decoded", "img/7.png", "--skip-bad-images"]),
    (break_corrupt_jpeg, ["1 of 60 images cannot be decoded", "img/7.png"]),
    (break_zero_bytes, ["img/7.png (empty file)"]),
    (break_huge, ["img/7.png", "exceeds limit"]),
])
def test_bad_images(capsys, tiny, tmp_path, damage, needles):
    damage(tiny.parent)
    code, _, err = cli(capsys, "train", tiny, *TINY, "--epochs", 1, "--run-dir", tmp_path / "run")
    assert_one_error(code, err, *needles)
    assert not (tmp_path / "run").exists()
    assert not list(tmp_path.glob("cache/*.pt"))


def test_odd_but_valid_images_load(capsys, tiny):
    img = tiny.parent / "img"
    a = np.zeros((24, 24, 4), np.uint8)
    a[..., 0], a[..., 3] = 255, 128
    Image.fromarray(a, "RGBA").save(img / "0.png")  # alpha
    Image.fromarray(np.full((24, 24), 40000, np.uint16)).save(img / "1.png")  # 16-bit grey
    Image.fromarray(np.full((1, 1, 3), 200, np.uint8)).save(img / "2.png")  # 1x1
    Image.fromarray(np.full((2000, 1500, 3), 90, np.uint8)).save(img / "3.png")  # big, but not a bomb
    code, out, err = cli(capsys, "prepare", tiny, "--size", "16x16")
    assert code == 0 and "images (60, 3, 16, 16)" in out, err


def write_csv(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def test_csv_with_bom_crlf_and_quoted_commas_loads(capsys, tiny):
    rows = tiny.read_text().splitlines()
    body = [rows[0]] + [r.replace(",dark", ',"dark, deep"') for r in rows[1:]]
    write_csv(tiny, "\ufeff" + "\r\n".join(body) + "\r\n")
    code, out, err = cli(capsys, "prepare", tiny, "--size", "16x16")
    assert code == 0, err
    assert "bright: dark, deep" in out and "color: blue" in out


@pytest.mark.parametrize("edit, needles", [
    (lambda lines: lines[:5] + [lines[5] + ",extra"] + lines[6:], ["row 6 has 4 fields", "the header has 3"]),
    (lambda lines: lines[:5] + [lines[5].rsplit(",", 1)[0]] + lines[6:], ["row 6 has 2 fields"]),
    (lambda lines: [lines[0].replace("color", "colour")] + lines[1:], ["heads are ['color', 'bright']", "colour"]),
])
def test_bad_csv_rows(capsys, tiny, tmp_path, edit, needles):
    code, _, _ = cli(capsys, "split", tiny, "--out", tmp_path / "s.json")
    assert code == 0
    write_csv(tiny, "\n".join(edit(tiny.read_text().splitlines())) + "\n")
    code, _, err = cli(capsys, "prepare", tiny, "--size", "16x16", "--split", tmp_path / "s.json")
    assert_one_error(code, err, *needles)


def test_non_utf8_csv(capsys, tiny):
    write_csv(tiny, tiny.read_bytes().replace(b"light", b"l\xe9ger", 1))
    code, _, err = cli(capsys, "prepare", tiny)
    assert_one_error(code, err, "is not UTF-8", "re-save the CSV as UTF-8")
    assert not tiny.with_name("labels.split.json").exists()


def test_run_folder_that_exists(capsys, tiny, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    code, _, err = cli(capsys, "train", tiny, *TINY, "--epochs", 1, "--run-dir", tmp_path / "run")
    assert_one_error(code, err, "already exists", "--resume")
    assert visible(tmp_path / "run") == ["notes.txt"]


@pytest.mark.parametrize("edit, needles", [
    (lambda d: d["sides"]["train"].append(d["sides"]["test"].pop()), ["edited by hand"]),  # moved test -> train
    (lambda d: d["sides"]["test"].append("img/999.png"), ["edited by hand"]),
    (lambda d: d.pop("sides"), ["not a valid attrfit split file"]),
    (lambda d: d["sides"].update(val=[1, 2]), ["not a valid attrfit split file"]),
])
def test_split_edited_by_hand(capsys, tiny, tmp_path, edit, needles):
    import json

    split = tmp_path / "s.json"
    assert cli(capsys, "split", tiny, "--out", split)[0] == 0
    d = json.loads(split.read_text())
    edit(d)
    split.write_text(json.dumps(d))
    code, _, err = cli(capsys, "prepare", tiny, "--size", "16x16", "--split", split)
    assert_one_error(code, err, *needles)


def test_split_edited_by_hand_without_digest_still_caught(capsys, tiny, tmp_path):
    """Split files written before the assignment digest: a path renamed to one not in the table."""
    import json

    split = tmp_path / "s.json"
    assert cli(capsys, "split", tiny, "--out", split)[0] == 0
    d = json.loads(split.read_text())
    d.pop("assignment", None)
    d["sides"]["test"][0] = "img/999.png"
    split.write_text(json.dumps(d))
    code, _, err = cli(capsys, "prepare", tiny, "--size", "16x16", "--split", split)
    assert_one_error(code, err, "img/999.png", "edited by hand")


def test_evaluate_and_resume_against_changed_data(capsys, tiny, tmp_path):
    run = tmp_path / "run"
    code, _, err = cli(capsys, "train", tiny, *TINY, "--epochs", 1, "--run-dir", run)
    assert code == 0, err
    lines = tiny.read_text().splitlines()
    # an unknown class at evaluation time
    other = write_csv(tiny.with_name("other.csv"), "\n".join([lines[0], lines[1].replace(",dark", ",purple")]
                                                            + lines[2:]) + "\n")
    code, _, err = cli(capsys, "evaluate", run, "--csv", other)
    assert_one_error(code, err, "unknown class 'purple'", "known: dark, light")
    # a schema mismatch: the data lacks a head the checkpoint has
    fewer = write_csv(tiny.with_name("fewer.csv"), "\n".join(r.rsplit(",", 1)[0] for r in lines) + "\n")
    code, _, err = cli(capsys, "evaluate", run, "--csv", fewer)
    assert_one_error(code, err, "expects heads", "bright")
    # the run's own CSV relabelled after training: evaluate and resume refuse
    write_csv(tiny, "\n".join([lines[0], lines[1].replace(",dark", ",light")] + lines[2:]) + "\n")
    code, _, err = cli(capsys, "evaluate", run)
    assert_one_error(code, err, "relabelled")
    code, _, err = cli(capsys, "train", "--resume", run, "--quiet")
    assert_one_error(code, err, "relabelled")
