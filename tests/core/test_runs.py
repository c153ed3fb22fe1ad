"""Run folders (core/runs.py): one process per run (the lock), folders never reused, paths that work from anywhere."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import assert_one_error, cli, write_tiny


from attrfit.core import runs
from attrfit.core.errors import AttrfitError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--size", "16x16", "--width", "8", "--stages", "2", "--batch-size", "16", "--lr", "0.05", "--seed", "1",
        "--precision", "fp32", "--no-report", "--quiet"]
needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")


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
