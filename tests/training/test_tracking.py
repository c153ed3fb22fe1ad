"""--log tensorboard / --log mlflow: what a run wrote, read back with the libraries themselves."""

import json
import logging
import sys
from types import SimpleNamespace

import pytest
from helpers import write_tiny

from attrfit import cli

from attrfit.training import tracking
from attrfit.recipe.config import TrainConfig, apply
from attrfit.core.errors import AttrfitError
from attrfit.core.runs import MetricsLog
from attrfit.training.loop import fit

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning", "ignore::FutureWarning")

BASE = {"size": "16x16", "width": 8, "stages": 2, "epochs": 2, "batch_size": 16, "lr": 0.05, "precision": "fp32"}
SKIP_TB = "--log tensorboard needs the optional extra: pip install 'attrfit[track]' (tensorboard)"
SKIP_MLFLOW = "--log mlflow needs the optional extra: pip install 'attrfit[track]' (mlflow-skinny)"


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """One 2-epoch run logged to both trackers; MLflow's store is the default ./mlruns of the working folder."""
    pytest.importorskip("tensorboard", reason=SKIP_TB)
    pytest.importorskip("mlflow", reason=SKIP_MLFLOW)
    root = tmp_path_factory.mktemp("tracking")
    csv_path = write_tiny(root / "data")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
        mp.setenv("ATTRFIT_CACHE_DIR", str(root / "cache"))
        cfg = apply(TrainConfig(), {**BASE, "data.csv": str(csv_path), "report": True, "log": "tensorboard,mlflow"})
        run = fit(cfg, run_dir=root / "run", progress=False)
    return SimpleNamespace(root=root, run=run, rows=MetricsLog(run / "metrics.csv").rows(),
                           results=json.loads((run / "results.json").read_text()))


def test_tensorboard_holds_every_epoch_and_the_report_figures(logged):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(logged.run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    for key, t in (("val_mean_accuracy", "val/mean_accuracy"), ("train_loss_color", "train/loss_color"),
                   ("val_balanced_accuracy_bright", "val/balanced_accuracy_bright"), ("lr", "lr"),
                   ("images_per_s", "speed/images_per_s")):
        events = ea.Scalars(t)
        assert [e.step for e in events] == [1, 2]
        assert [e.value for e in events] == pytest.approx([float(r[key]) for r in logged.rows], rel=1e-5)
    test = ea.Scalars("test/mean_accuracy")
    assert test[0].value == pytest.approx(logged.results["mean"]["accuracy"])
    assert test[0].step == logged.results["best_epoch"]
    images = ea.Tags()["images"]
    assert "report/accuracy" in images and "report/confusion_00_color" in images


def test_mlflow_run_has_params_metrics_and_files(logged):
    import os

    from mlflow.tracking import MlflowClient

    state = json.loads((logged.run / "tracking.json").read_text())
    assert state["mlflow_tracking_uri"] == (logged.root / "mlruns").as_uri()  # the default store: ./mlruns
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=state["mlflow_tracking_uri"])
    r = client.get_run(state["mlflow_run_id"])
    assert r.info.status == "FINISHED" and r.info.run_name == "run"
    assert client.get_experiment(r.info.experiment_id).name == "attrfit"
    assert r.data.params["epochs"] == "2" and r.data.params["augment.cutout"] == "0.0"
    history = client.get_metric_history(r.info.run_id, "val_mean_accuracy")
    history = sorted(history, key=lambda m: m.step)
    assert [m.step for m in history] == [int(x["epoch"]) for x in logged.rows]
    assert [m.value for m in history] == pytest.approx([float(x["val_mean_accuracy"]) for x in logged.rows], rel=1e-5)
    assert r.data.metrics["test_mean_balanced_accuracy"] == pytest.approx(logged.results["mean"]["balanced_accuracy"])
    files = {f.path for f in client.list_artifacts(r.info.run_id)}
    assert {"report.html", "results.json", "best.pt", "metrics.csv", "config.json"} <= files


def test_mlflow_respects_the_tracking_uri_and_continues_a_resumed_run(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason=SKIP_MLFLOW)
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "store").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "mine")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    run = tmp_path / "run"
    run.mkdir()
    first = tracking.MlflowTracker(run, {"epochs": 3})
    first.log_epoch({"epoch": 1, "val_mean_accuracy": 0.5, "note": "text is skipped"})
    first.close()  # stopped before the end
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(first.run_id).info.status == "KILLED"
    again = tracking.MlflowTracker(run, {"epochs": 3})  # --resume: the same MLflow run goes on
    assert again.run_id == first.run_id
    again.log_epoch({"epoch": 2, "val_mean_accuracy": 0.6})
    r = client.get_run(first.run_id)
    assert r.info.status == "RUNNING" and client.get_experiment(r.info.experiment_id).name == "mine"
    assert [m.value for m in client.get_metric_history(r.info.run_id, "val_mean_accuracy")] == [0.5, 0.6]


class Broken:
    def log_epoch(self, row):
        raise OSError("disk full")

    def log_end(self, run, results, best_epoch):
        raise OSError("disk full")

    def close(self):
        pass


def test_a_failing_tracker_warns_once_and_training_goes_on(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(tracking, "check", lambda names: None)
    monkeypatch.setattr(tracking, "TensorBoardTracker", lambda run: Broken())
    csv_path = write_tiny(tmp_path / "data")
    cfg = apply(TrainConfig(), {**BASE, "data.csv": str(csv_path), "report": False, "log": "tensorboard"})
    with caplog.at_level(logging.WARNING, logger="attrfit"):
        run = fit(cfg, run_dir=tmp_path / "run", progress=False)
    assert (run / "results.json").is_file() and len(MetricsLog(run / "metrics.csv").rows()) == 2
    warned = [r.getMessage() for r in caplog.records if "--log tensorboard failed" in r.getMessage()]
    assert len(warned) == 1 and "disk full" in warned[0] and "training goes on" in warned[0]


def test_a_missing_package_is_one_clear_error_before_the_run_starts(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    csv_path = write_tiny(tmp_path / "data")
    code = cli.main(["train", str(csv_path), "--size", "16x16", "--epochs", "1", "--precision", "fp32",
                     "--log", "mlflow", "--run-dir", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "--log mlflow needs the 'mlflow' package" in err[0] and "attrfit[track]" in err[0]
    assert not (tmp_path / "run").exists()


def test_unknown_tracker_names_are_refused():
    with pytest.raises(AttrfitError, match="unknown tracker; choose from tensorboard, mlflow"):
        tracking.check(("wandb",))


def test_without_log_the_tracker_does_nothing(tmp_path):
    t = tracking.open_tracker((), tmp_path, {})
    t.log_epoch({"epoch": 1, "val_mean_accuracy": 0.5})
    t.log_end(tmp_path)  # no results.json needed when nothing is logged
    t.close()
    assert list(tmp_path.iterdir()) == []


class _Silent:
    """A TCP server that accepts connections and never answers (a hung tracking server)."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:  # bound, then closed: nothing listens there, so connections are refused
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("server", ["refusing", "silent"])
def test_an_unreachable_tracking_server_costs_seconds_and_one_warning(tmp_path, monkeypatch, caplog, server):
    """MLflow's own retries against a closed port waited minutes before the first epoch; the server is now asked
    once with a short timeout, and the run trains without it."""
    import time

    pytest.importorskip("mlflow", reason=SKIP_MLFLOW)
    silent = _Silent() if server == "silent" else None
    port = silent.port if silent else _closed_port()
    csv_path = write_tiny(tmp_path / "data")
    for k in tracking.MLFLOW_BOUNDS:
        monkeypatch.delenv(k, raising=False)
    cfg = apply(TrainConfig(), {**BASE, "data.csv": str(csv_path), "report": False, "epochs": 1})
    fit(cfg, run_dir=tmp_path / "warm", progress=False)  # the cache and split exist: both timings start even
    start = time.perf_counter()
    fit(cfg, run_dir=tmp_path / "plain", progress=False)
    plain_s = time.perf_counter() - start
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    try:
        with caplog.at_level(logging.WARNING, logger="attrfit"):
            start = time.perf_counter()
            run = fit(apply(cfg, {"log": "mlflow"}), run_dir=tmp_path / "logged", progress=False)
            logged_s = time.perf_counter() - start
    finally:
        if silent:
            silent.close()
    assert (run / "results.json").is_file()
    assert logged_s - plain_s < 15  # seconds (the probe waits PROBE_TIMEOUT_S), not minutes of retries
    warned = [r.getMessage() for r in caplog.records if "--log mlflow" in r.getMessage()]
    assert len(warned) == 1 and "training goes on" in warned[0] and str(port) in warned[0]
