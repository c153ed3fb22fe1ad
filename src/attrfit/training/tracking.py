"""Experiment trackers: ``--log tensorboard`` and ``--log mlflow`` mirror a run into the tools people use.

The training loop calls a :class:`Tracker` once per epoch (``log_epoch(row)``, the row it
appends to ``metrics.csv``) and once at the end (``log_end(run)``, after ``results.json``
and the report exist), then ``close()``. The run folder stays the record; trackers only
mirror it, so a tracker that fails (disk, server, a library bug) logs one warning and is
switched off, and training goes on.

- tensorboard: event files in ``RUN/tensorboard/`` through ``torch.utils.tensorboard``:
  every numeric column of metrics.csv per epoch (``train/loss``, ``val/accuracy_<head>``,
  ``val/mean_accuracy``, ``lr``, ``speed/images_per_s``...), then the test metrics and the
  report's figures. View with ``tensorboard --logdir runs``.
- mlflow: one MLflow run per attrfit run (its id is kept in ``RUN/tracking.json``, so a
  resumed run continues it): the config as parameters, the same metrics per epoch, the
  test metrics, and the files report.html, results.json, metrics.csv, config.json and
  best.pt as artifacts. The store is ``$MLFLOW_TRACKING_URI``, else ``./mlruns`` (a local
  file store, which MLflow 3 accepts only with ``MLFLOW_ALLOW_FILE_STORE=true``: attrfit
  sets it for that default store). Experiment ``$MLFLOW_EXPERIMENT_NAME``, else ``attrfit``.
  A tracking server is asked once, before the first epoch, with a short timeout
  (:data:`PROBE_TIMEOUT_S`): one that refuses or does not answer costs seconds, not MLflow's
  default minutes of retries. MLflow's own retries and timeouts are bounded too
  (:data:`MLFLOW_BOUNDS`, unless the environment sets them), for a server that goes away mid-run.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from pathlib import Path

from attrfit.core.errors import AttrfitError
from attrfit.evaluation.results import MeanMetrics, Results

log = logging.getLogger(__name__)

TRACKERS = ("tensorboard", "mlflow")
PROBE_TIMEOUT_S = 3.0  # how long a tracking server has to answer before the run goes on without it
# MLflow retries a failed request 7 times with exponential backoff, each waiting up to 120 s, by default
MLFLOW_BOUNDS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
INSTALL = "pip install 'attrfit[track]'"
ARTIFACTS = ("report.html", "results.json", "metrics.csv", "config.json", "best.pt")


def check(names: tuple[str, ...] | list[str]) -> None:
    """Refuse unknown tracker names and trackers whose package is missing, before a run starts."""
    for name in names:
        if name not in TRACKERS:
            raise AttrfitError(f"--log {name}: unknown tracker; choose from {', '.join(TRACKERS)} "
                               "(several: --log tensorboard,mlflow)")
        module = "tensorboard" if name == "tensorboard" else "mlflow"
        try:
            __import__(module)
        except ImportError:
            raise AttrfitError(f"--log {name} needs the '{module}' package, which is not installed: {INSTALL} "
                               f"(or pip install {'tensorboard' if name == 'tensorboard' else 'mlflow-skinny'}), "
                               f"or train without --log {name}") from None


def metric_values(row: dict) -> dict[str, float]:
    """The finite numeric entries of a metrics.csv row (``epoch`` and ``step`` are positions, not metrics)."""
    out = {}
    for k, v in row.items():
        if k in ("epoch", "step"):
            continue
        try:
            x = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(x):
            out[k] = x
    return out


def tag(key: str) -> str:
    """A metrics.csv column as a grouped tag: train_loss_age -> train/loss_age, images_per_s -> speed/images_per_s."""
    for prefix in ("train_", "val_", "test_"):
        if key.startswith(prefix):
            return prefix[:-1] + "/" + key[len(prefix):]
    if key in ("images_per_s", "seconds", "wall_s"):
        return "speed/" + key
    return key


def results_values(results: Results) -> dict[str, float]:
    """results.json as flat metrics: test_accuracy_<head>, test_mean_accuracy, test_instance_f1..."""
    out = results.columns("test", mean_fields=tuple(f.name for f in dataclasses.fields(MeanMetrics)))
    if results.instance is not None:
        out.update((f"test_instance_{k}", v) for k, v in results.instance.to_json().items() if not k.startswith("n_"))
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float)) and math.isfinite(v)}


# ---------------------------------------------------------------- the backends

class TensorBoardTracker:
    def __init__(self, run: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run / "tensorboard"))

    def log_epoch(self, row: dict) -> None:
        epoch = int(float(row["epoch"]))
        for k, v in metric_values(row).items():
            self.writer.add_scalar(tag(k), v, epoch)
        self.writer.flush()

    def log_end(self, run: Path, results: Results, best_epoch: int) -> None:
        import numpy as np
        from PIL import Image

        for k, v in results_values(results).items():
            self.writer.add_scalar(tag(k), v, best_epoch)
        for png in sorted((run / "report_files").glob("*.png")):  # the report's figures, as written
            with Image.open(png) as im:
                self.writer.add_image(f"report/{png.stem}", np.asarray(im.convert("RGB")), best_epoch,
                                      dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MlflowTracker:
    def __init__(self, run: Path, config: dict) -> None:
        from mlflow.tracking import MlflowClient

        from attrfit.core import runs

        uri = os.environ.get("MLFLOW_TRACKING_URI") or (Path.cwd() / "mlruns").as_uri()
        if uri.startswith("file:") or "://" not in uri:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses file stores otherwise
        if uri.startswith(("http://", "https://")):
            for k, v in MLFLOW_BOUNDS.items():
                os.environ.setdefault(k, v)
            probe_server(uri)
        self.client = MlflowClient(tracking_uri=uri)
        state = run / "tracking.json"
        known = runs.read_json(state) if state.is_file() else {}
        if known.get("mlflow_run_id") and known.get("mlflow_tracking_uri") == uri:
            self.run_id = known["mlflow_run_id"]  # a resumed run continues its MLflow run
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            self.run_id = self._start(run, config)
            runs.write_json(state, {"mlflow_run_id": self.run_id, "mlflow_tracking_uri": uri})
        self.uri = uri
        self.finished = False

    def _start(self, run: Path, config: dict) -> str:
        from attrfit.core.version import __version__
        from attrfit.recipe.config import flatten

        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "attrfit"
        exp = self.client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(name)
        r = self.client.create_run(exp_id, run_name=run.name,
                                   tags={"attrfit.run_dir": str(run.resolve()), "attrfit.version": __version__})
        from mlflow.entities import Param

        params = [Param(k, str(v)[:6000]) for k, v in flatten(config).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(r.info.run_id, params=params[start : start + 100])
        return r.info.run_id

    def _log(self, values: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        ms = int(time.time() * 1000)
        metrics = [Metric(metric_key(k), v, ms, step) for k, v in values.items()]
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + 1000])

    def log_epoch(self, row: dict) -> None:
        self._log(metric_values(row), int(float(row["epoch"])))

    def log_end(self, run: Path, results: Results, best_epoch: int) -> None:
        self._log(results_values(results), best_epoch)
        for name in ARTIFACTS:
            if (run / name).is_file():
                self.client.log_artifact(self.run_id, str(run / name))
        self.client.set_terminated(self.run_id, "FINISHED")
        self.finished = True

    def close(self) -> None:
        if not self.finished:  # stopped or failed before the end; 'attrfit train --resume' reopens it
            self.client.set_terminated(self.run_id, "KILLED")


def probe_server(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise ``ConnectionError`` when the server at ``uri`` refuses or does not answer within ``timeout``
    seconds; any HTTP answer (an error status included: a proxy, a login) counts as reachable.

    >>> probe_server("http://127.0.0.1:9")  # doctest: +SKIP
    Traceback (most recent call last):
    ConnectionError: no answer from http://127.0.0.1:9 within 3 s (Connection refused)
    """
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            return
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ConnectionError(f"no answer from {uri} within {timeout:.0f} s ({getattr(reason, 'strerror', None) or reason})") from None


def metric_key(key: str) -> str:
    """MLflow keys allow letters, digits, _ - . / and spaces; head names may hold anything else."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", key)


# ---------------------------------------------------------------- what train.py holds

class Tracker:
    """The trackers of one run; each call goes to every backend, and a backend that fails warns once
    and is switched off (a tracker never stops training).

    >>> t = open_tracker((), Path("runs/x"), {})  # no --log: every call does nothing
    >>> t.log_epoch({"epoch": 1, "train_loss": 0.5}); t.close()
    """

    def __init__(self, backends: dict[str, object]) -> None:
        self.backends = backends

    def _each(self, method: str, *args) -> None:
        for name, backend in list(self.backends.items()):
            try:
                getattr(backend, method)(*args)
            except Exception as e:  # noqa: BLE001 - any failure of a tracker: warn once, train on
                log.warning("--log %s failed (%s: %s); training goes on without it (the run folder keeps "
                            "everything)", name, type(e).__name__, e)
                self.backends.pop(name)

    def log_epoch(self, row: dict) -> None:
        self._each("log_epoch", row)

    def log_end(self, run: Path) -> None:
        """After results.json (and the report) are written: test metrics, figures, files."""
        if not self.backends:
            return
        from attrfit.core import runs

        try:
            results = Results.from_json(runs.read_json(run / "results.json"), str(run / "results.json"))
        except AttrfitError as e:
            log.warning("trackers: %s; the test metrics are not logged", e)
            return
        self._each("log_end", run, results, int(results.best_epoch or 0))

    def close(self) -> None:
        self._each("close")
        self.backends = {}


def open_tracker(names: tuple[str, ...] | list[str], run: Path, config: dict) -> Tracker:
    """The trackers named by ``--log`` for a run folder; one that cannot start warns and is left out."""
    check(names)
    backends: dict[str, object] = {}
    for name in dict.fromkeys(names):
        try:
            backends[name] = TensorBoardTracker(run) if name == "tensorboard" else MlflowTracker(run, config)
        except Exception as e:  # noqa: BLE001 - e.g. an unreachable tracking server
            log.warning("--log %s could not start (%s: %s); training goes on without it", name, type(e).__name__, e)
    return Tracker(backends)
