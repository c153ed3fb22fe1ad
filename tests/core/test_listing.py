"""attrfit runs (core/listing.py): each run folder's state from what is on disk, and its scores."""

import json
import os
import shutil
import time
from types import SimpleNamespace

import pytest

from attrfit import cli
from attrfit.core import runs as runs_mod
from attrfit.core.listing import list_runs

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def runs(trained_tiny) -> SimpleNamespace:
    """``runs.a``: pytest's session-wide finished 2-epoch run (read only: the tests copy it before changing anything)."""
    return SimpleNamespace(a=trained_tiny[0])


def _age(folder, seconds=3600):
    t = time.time() - seconds
    for p in [*folder.rglob("*"), folder]:
        os.utime(p, (t, t))


def test_runs_lists_finished_stopped_failed_and_broken(runs, tmp_path, capsys):
    folder = tmp_path / "runs"
    shutil.copytree(runs.a, folder / "1-finished")
    stopped = shutil.copytree(runs.a, folder / "2-stopped")
    (stopped / "results.json").unlink()
    lines = (stopped / "metrics.csv").read_text().splitlines()
    (stopped / "metrics.csv").write_text("\n".join(lines[:2]) + "\n")  # header + epoch 1
    killed = folder / "3-killed"  # killed before its first checkpoint: config.json alone
    killed.mkdir()
    shutil.copy(runs.a / "config.json", killed)
    (folder / "4-empty").mkdir()
    (folder / "5-garbage").mkdir()
    (folder / "5-garbage" / "config.json").write_text("{half")
    half = shutil.copytree(runs.a, folder / "6-half")
    (half / "results.json").write_text('{"mean": ')  # killed mid-write (by hand; attrfit writes atomically)
    failed = shutil.copytree(killed, folder / "7-failed")
    runs_mod.Failure("diverged", "the loss became nan by step 3 (head(s) color; lr 100). Lower --lr", 0, 3,
                     False).write(failed)
    no_best = shutil.copytree(runs.a, folder / "8-no-best")
    (no_best / "best.pt").unlink()
    for i, p in enumerate(sorted(folder.iterdir())):
        _age(p, 3600 - 60 * i)
    found = {os.path.basename(r.path): r for r in list_runs(folder)}
    assert [os.path.basename(r.path) for r in list_runs(folder)] == sorted(found)  # by time
    assert found["1-finished"].state == "finished"
    res = json.loads((runs.a / "results.json").read_text())
    assert found["1-finished"].test_mean_accuracy == res["mean"]["accuracy"]
    assert found["2-stopped"].state == "stopped" and "epoch 1 of 2" in found["2-stopped"].detail
    assert "--resume" in found["2-stopped"].detail
    assert found["3-killed"].state == "stopped" and "before its first checkpoint" in found["3-killed"].detail
    assert found["4-empty"].state == "broken" and "no config.json" in found["4-empty"].detail
    assert found["5-garbage"].state == "broken" and found["6-half"].state == "broken"
    assert found["7-failed"].state == "failed" and "loss became nan" in found["7-failed"].detail
    assert found["8-no-best"].state == "broken" and "best.pt is missing" in found["8-no-best"].detail
    assert cli.main(["runs", str(folder)]) == 0
    text = capsys.readouterr().out
    assert "Traceback" not in text and text.count("broken") == 4
    assert cli.main(["runs", str(folder), "--json"]) == 0
    assert [r["state"] for r in json.loads(capsys.readouterr().out)][:2] == ["finished", "stopped"]


def test_runs_of_a_missing_folder_is_one_error_line(tmp_path, capsys):
    assert cli.main(["runs", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such folder" in err[0]


def test_running_means_a_process_holds_the_run_not_a_recent_write(runs, tmp_path):
    live = shutil.copytree(runs.a, tmp_path / "live")
    (live / "results.json").unlink()
    assert list_runs(live)[0].state == "stopped"  # written just now, but no process trains in it (a Ctrl-C)
    with runs_mod.lock_run(live):  # what a training process holds
        assert list_runs(live)[0].state == "running"
        assert runs_mod.is_training(live)
    assert list_runs(live)[0].state == "stopped" and not runs_mod.is_training(live)


def test_runs_shows_the_best_val_of_the_runs_own_monitor(runs, tmp_path, capsys):
    rows = runs_mod.MetricsLog(runs.a / "metrics.csv").rows()
    plain = list_runs(runs.a)[0]
    config = json.loads((runs.a / "config.json").read_text())
    assert plain.monitor == config["monitor"]
    assert plain.best_val == max(float(r[f"val_{plain.monitor}"]) for r in rows)
    assert plain.best_epoch == json.loads((runs.a / "results.json").read_text())["best_epoch"]
    balanced = shutil.copytree(runs.a, tmp_path / "balanced")
    (balanced / "config.json").write_text(json.dumps({**config, "monitor": "mean_balanced_accuracy"}))
    found = list_runs(balanced)[0]
    assert found.best_val == max(float(r["val_mean_balanced_accuracy"]) for r in rows)
    assert cli.main(["runs", str(balanced)]) == 0
    assert "best val = mean balanced accuracy" in capsys.readouterr().out
