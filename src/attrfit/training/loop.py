"""The training run, top to bottom: data, trainer, epochs (train, validate, checkpoint), test once.

Training only ever sees the train side: the loop is handed a tensor holding the train
images alone (:class:`~attrfit.training.sides.Sides`), and the test side is touched once,
at the end, to score the best checkpoint. A run resumes exactly from ``last.pt``.

The loop itself is :func:`train_epochs`, readable top to bottom; :func:`fit` and the helpers
around it only set up (config, data, run folder, trainer, resume) and tear down.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from attrfit.core.errors import AttrfitError
from attrfit.core.memory import is_out_of_memory
from attrfit.data.split import SplitRef, same_split, save_split
from attrfit.data.schema import Schema
from attrfit.evaluation.decision_fit import training_rule
from attrfit.evaluation.metrics import is_collapsed
from attrfit.evaluation.results import HeadMetrics, MeanMetrics, Results
from attrfit.evaluation.scoring import evaluate_images
from attrfit.model import checkpoint
from attrfit.model.checkpoint import Checkpoint, Progress
from attrfit.recipe.config import TrainConfig, to_dict, validate
from attrfit.recipe.schedule import lr_at, momentum_at
from attrfit.training import budget, final, tracking, trainer  # trainer.train_step, looked up per call (tests replace it)
from attrfit.training.distributed import Dist
from attrfit.training.checkpoints import checkpoint_of, init_weights_from, restore
from attrfit.training.sides import Sides, device_sides, gather, make_sides
from attrfit.training.trainer import (Diverged, StepMeter, Trainer, build_trainer, check_weights, epoch_order,
                                      steps_per_epoch)

log = logging.getLogger(__name__)


def monitored(cfg: TrainConfig, results: Results) -> float:
    mean = results.mean
    return float(mean.balanced_accuracy if cfg.monitor == "mean_balanced_accuracy" else mean.accuracy)


def epoch_row(t: Trainer, prog: Progress, val: Results, seconds: float) -> dict:
    s = prog.sums
    steps = max(1, s["steps"])
    row = {"epoch": prog.epoch, "step": prog.step,
           "lr": lr_at(max(0, prog.step - 1), t.total_steps, t.max_lr, t.cfg.schedule),
           "train_loss": s["loss"] / steps}
    for j, h in enumerate(t.schema.heads):
        row[f"train_loss_{h}"] = s["per_head"][j] / steps
    for j, h in enumerate(t.schema.heads):
        row[f"train_accuracy_{h}"] = s["correct"][j] / max(1, s["labelled"][j])
    row.update(val.columns("val"))  # val_<metric>_<head>..., then val_mean_<metric>
    row["train_mean_accuracy"] = float(np.mean([row[f"train_accuracy_{h}"] for h in t.schema.heads]))
    row["seconds"] = seconds
    row["wall_s"] = prog.wall_time  # training time summed over the run and its resumes (validation excluded)
    row["images_per_s"] = s["images"] / max(seconds, 1e-9)
    return row


def warn_collapse(val: Results, epoch: int) -> None:
    """One line naming the heads that predict one class for >= 95% of val images."""
    flat = [f"{h} ({100 * m.pred_top_share:.0f}%)" for h, m in val.heads.items()
            if is_collapsed(m.pred_top_share, m.n)]
    if flat:
        log.warning("epoch %d: collapsed to one class on val (their accuracy is just the majority rate): %s",
                    epoch, ", ".join(flat))


def eval_model(t: Trainer) -> nn.Module:
    return t.ema if t.ema is not None else t.model


def validate_epoch(t: Trainer, sides: Sides) -> Results:
    rule = training_rule(t.cfg, sides.train_labels.cpu().numpy(), t.schema)  # the labels the run will give
    return evaluate_images(eval_model(t), sides.val_images, sides.val_labels, sides.train_labels, t.schema,
                           t.device, t.precision, t.cfg.eval_batch_size, tta=t.cfg.tta, decide=rule)[0]


def fit(cfg: TrainConfig, run_dir: str | Path | None = None, resume: str | Path | None = None,
        progress: bool = True) -> Path:
    """Train a run end to end (or continue one with ``resume``); return the run folder.

    >>> run = fit(TrainConfig(data=DataConfig(csv="demo/annotations.csv")))  # doctest: +SKIP
    """
    from attrfit.core import runs
    from attrfit.core.memory import keep_freed_memory
    from attrfit.recipe.config import from_dict
    from attrfit.training.distributed import from_env

    started = time.perf_counter()  # --budget counts from here
    keep_freed_memory()  # each step reuses the last one's tensors' pages (core/memory.py)
    if resume is not None:
        from attrfit.data.load import saved_run_config

        cfg = from_dict(runs.read_json(Path(resume) / "config.json"))
        cfg = dataclasses.replace(cfg, data=saved_run_config(cfg.data, resume))
        runs.check_recorded_paths(cfg.data, Path(resume) / "config.json", "or correct the path in that file")
    else:
        cfg = runs.with_absolute_paths(cfg)  # the run folder then works from any working folder
    dist = from_env(cfg.device)
    held: list = []  # the run folder's lock (rank 0), released when this returns
    try:
        if dist.is_main and resume is not None:
            held.append(runs.lock_run(Path(resume)))
            _going_on_after_failure(Path(resume))
        elif dist.is_main and run_dir is not None:
            runs.check_new_run_dir(run_dir)  # before the data is loaded: fail in seconds, not after the cache
        return _fit(cfg, run_dir, resume, progress, dist, held, started)
    except RuntimeError as e:  # torch.OutOfMemoryError is one; the CPU allocator raises a plain one
        if not is_out_of_memory(e):
            raise
        raise AttrfitError(
            f"out of memory on {cfg.device} at --batch-size {cfg.batch_size} (--eval-batch-size "
            f"{cfg.eval_batch_size}, --size {cfg.data.size}); start a new run with a smaller --batch-size "
            f"(e.g. {max(1, cfg.batch_size // 2)}) or --size; checkpoints written so far are kept"
        ) from None
    finally:
        for lock in held:
            lock.release()
        dist.close()


def _going_on_after_failure(run: Path) -> None:
    """``--resume`` of a run that failed: refused where it would repeat the failure, else the record goes."""
    from attrfit.core import runs

    failure = runs.Failure.read(run)
    if failure is None:
        return
    if failure.kind == "diverged":
        start = f"--init-from {run} (its last good weights)" if failure.checkpoint else "the change"
        raise AttrfitError(f"{run} failed in epoch {failure.epoch + 1}: {failure.message.splitlines()[0]}. "
                           "Resuming runs the same steps with the same settings and fails the same way: start a "
                           f"new run with the change it names, e.g. 'attrfit train CSV --lr LOWER' with {start}")
    runs.Failure.clear(run)


def _fit(cfg, run_dir, resume, progress, dist: Dist, held: list, started: float) -> Path:
    from attrfit.core import runs
    from attrfit.data.load import load_data

    ckpt = None
    if resume is not None:
        run = Path(resume)
        if (run / "last.pt").exists() or checkpoint.previous_of(run / "last.pt").exists():
            ckpt, _ = Checkpoint.load_with_fallback(run / "last.pt")
    validate(cfg)
    tracking.check(cfg.log)  # a missing tracker package stops us before a run folder is made
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # rank 0 makes the split and the cache first; the others then read them
    data = dist.main_first(lambda: load_data(cfg.data, progress=progress and dist.is_main, create_split=dist.is_main))
    sides = make_sides(data)

    def make_run() -> str | None:  # only rank 0 creates the run folder; the others learn its path
        if not dist.is_main:
            return None
        if resume is not None:
            return str(resume)
        run = runs.new_run_dir(run_dir, cfg.data.csv, to_dict(cfg))
        held.append(runs.lock_run(run))
        return str(run)

    run = Path(dist.broadcast_object(dist.main_first(make_run)))
    handler = runs.add_file_log(run) if dist.is_main else None
    try:
        return _train_in(run, cfg, data, sides, ckpt, progress, dist, started)
    except Exception as e:  # the error line goes to the screen from the command line; train.log keeps it too
        if handler is not None:
            handler.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, "attrfit: error: %s", (e,), None))
        raise
    finally:
        if handler is not None:
            logging.getLogger("attrfit").removeHandler(handler)
            handler.close()


def _check_resume(run: Path, data, ckpt: Checkpoint) -> None:
    diff = ckpt.schema.differences(data.schema)
    if diff:
        raise AttrfitError(f"cannot resume {run}: the data's schema changed ({'; '.join(diff)})")
    if ckpt.split is None or not same_split(ckpt.split, data.split):
        raise AttrfitError(f"cannot resume {run}: the split or table changed since the run started")


def _max_lr(cfg: TrainConfig, ckpt, run: Path, data, sides, dist: Dist, progress: bool) -> float:
    if ckpt is not None:
        return float(ckpt.max_lr)
    if cfg.optim.lr == "auto":
        from attrfit.training.lr_find import auto_lr

        return auto_lr(cfg, data.schema, sides, run / "lr_find", dist, progress=progress and dist.is_main)
    return float(cfg.optim.lr)


def _start_run(run: Path, t: Trainer, data, dist: Dist) -> None:
    from attrfit.core import runs
    from attrfit.core.memory import keep_freed_memory
    from attrfit.data.load import RUN_SPLIT

    if not dist.is_main:
        return
    runs.write_json(run / "config.json", to_dict(t.cfg))
    data.schema.save(run / "schema.json")
    save_split(data.split, run / RUN_SPLIT, force=True)  # evaluable later, whatever happens to the original
    runs.write_json(run / "split_ref.json", {"path": str(Path(data.split_path).resolve()),
                                             "fingerprint": data.split.fingerprint,
                                             "counts": data.split.counts})
    runs.write_json(run / "environment.json", {**runs.environment(), "device": str(t.device),
                                               "freed_memory": keep_freed_memory(),
                                               "precision": t.precision, "world_size": dist.world_size,
                                               "precision_check": t.check.to_dict() if t.check else None})


def _train_in(run: Path, cfg, data, sides: Sides, ckpt: Checkpoint | None, progress: bool, dist: Dist,
              started: float) -> Path:
    """Set up the trainer (new, or resumed from ``ckpt``), run :func:`train_epochs`, then score best.pt on test once."""
    from attrfit.core import runs

    max_lr = _max_lr(cfg, ckpt, run, data, sides, dist, progress)
    t = build_trainer(cfg, data.schema, sides, max_lr, dist)
    sides = device_sides(sides, t.device)
    metrics = runs.MetricsLog(run / "metrics.csv")
    if ckpt is not None:
        prog = _resume(run, t, data, ckpt, metrics)
    else:
        prog = _begin(run, t, data, sides, metrics, started)
    with _sigint_stops(t):
        tracker = tracking.open_tracker(t.cfg.log if dist.is_main else (), run, to_dict(t.cfg))
        try:
            try:
                train_epochs(run, t, sides, prog, data.split.ref(data.split_path), metrics, tracker,
                      progress and dist.is_main, replan=bool(t.cfg.budget) and ckpt is None)
            except Diverged as e:
                raise _failed(run, t, prog, e) from None
            except Exception as e:  # not KeyboardInterrupt: a stop is not a failure
                _failed(run, t, prog, e)
                raise
            if dist.is_main:
                final.score_test_side(run, t, data, prog)
                tracker.log_end(run)
                if t.cfg.budget and ckpt is None:
                    budget.outcome(run, time.perf_counter() - started)
        finally:
            tracker.close()
    dist.barrier()
    return run


def _failed(run: Path, t: Trainer, prog: Progress, e: Exception) -> Exception:
    """Record why training failed in ``RUN/failed.json`` (rank 0); return the error to raise, which for a
    divergence says what is kept and that resuming would repeat it."""
    from attrfit.core import runs

    has_ckpt = (run / "last.pt").is_file()
    if isinstance(e, Diverged):
        kept = ("its last good checkpoint (last.pt) is kept, but resuming from it repeats the same steps: start a "
                f"new run with that change (--init-from {run} starts from its weights)" if has_ckpt else
                "no checkpoint had been written yet: start a new run with that change")
        e = Diverged(f"{e} Training stopped; {kept}")
    if t.dist.is_main:
        kind = "diverged" if isinstance(e, Diverged) else "error"
        runs.Failure(kind, str(e) or type(e).__name__, prog.epoch, prog.step, has_ckpt).write(run)
    return e


def _resume(run: Path, t: Trainer, data, ckpt: Checkpoint, metrics) -> Progress:
    """Put the trainer back where ``ckpt`` left it; drop metrics rows logged after it."""
    _check_resume(run, data, ckpt)
    prog = restore(t, ckpt)
    if t.dist.is_main:
        metrics.truncate_after(prog.epoch)
    log.info("resuming %s at epoch %d, step %d", run, prog.epoch + 1, prog.step)
    return prog


def _begin(run: Path, t: Trainer, data, sides: Sides, metrics, started: float) -> Progress:
    """A new run: --init-from weights, the --budget plan, and the run folder's files."""
    if t.dist.is_main and metrics.path.exists():
        metrics.truncate_after(0)  # rows a run killed before its first checkpoint logged
    if t.cfg.init_from:
        init_weights_from(t, t.cfg.init_from)
    if t.cfg.budget:
        budget.start(run, t, sides, len(data.sides["test"]), started, t.dist)
    _start_run(run, t, data, t.dist)
    return Progress()


@contextlib.contextmanager
def _sigint_stops(t: Trainer):
    """While inside, Ctrl-C sets ``t.stop_requested``: :func:`train_epochs` finishes the step, checkpoints, then exits."""
    if not _main_thread():  # signal handlers can only be installed from the main thread
        yield
        return
    old = signal.signal(signal.SIGINT, lambda signum, frame: setattr(t, "stop_requested", True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


# ---------------------------------------------------------------- the loop

def train_epochs(run: Path, t: Trainer, sides: Sides, prog: Progress, split: SplitRef, metrics, tracker: tracking.Tracker,
          show: bool, replan: bool = False) -> None:
    """The training loop: each epoch trains its steps, validates, logs, and writes best.pt and last.pt.

    Starts where ``prog`` stands (a mid-epoch resume skips the batches already done). On Ctrl-C
    (``t.stop_requested``) the step in flight finishes, last.pt is written and KeyboardInterrupt is raised.
    Every rank steps; only rank 0 validates and writes. A new --budget run (``replan``) plans its epochs
    again after the first one or two, then fits its schedule to the budget at the pace of its last epochs:
    shorter whenever the epochs left would end past it, longer early on when many more fit."""
    bs = t.cfg.batch_size // t.dist.world_size  # per process
    epoch_times: list[float] = []  # --budget: each epoch's seconds, training, validation and checkpoints
    while prog.epoch < t.cfg.epochs:
        start = time.perf_counter()
        order = t.dist.shard(epoch_order(len(sides.train_images), t.cfg.seed, prog.epoch)).to(sides.train_images.device)
        n_steps = steps_per_epoch(len(order), bs)
        meter = StepMeter(t, prog, n_steps, prog.epoch, show)
        for i in range(prog.epoch_step, n_steps):
            if t.stop_requested:
                break
            idx = order[i * bs : (i + 1) * bs]
            x, y = gather(sides.train_images, sides.train_labels, idx, t.device)  # where the sides live
            lr = lr_at(prog.step, t.total_steps, t.max_lr, t.cfg.schedule)
            mom = momentum_at(prog.step, t.total_steps, t.cfg.schedule, t.cfg.optim.momentum)
            loss, per_head, correct = trainer.train_step(t, x, y, prog.step, lr, mom)
            prog.step += 1
            prog.epoch_step += 1
            meter.add(loss, per_head, correct, y, last=i == n_steps - 1)
            if t.cfg.checkpoint_every and prog.step % t.cfg.checkpoint_every == 0 and i < n_steps - 1:
                meter.fold()  # last.pt carries the epoch's sums so far
                save_last(run, t, prog, split)
        meter.close()
        if t.stop_requested:
            break
        elapsed = time.perf_counter() - start
        prog.wall_time += elapsed
        # validation: the monitored val mean picks the best epoch
        val = validate_epoch(t, sides) if t.dist.is_main else _empty_results(t.schema)
        prog.epoch += 1
        row = epoch_row(t, prog, val, elapsed)
        prog.sums, prog.epoch_step = {}, 0
        value = monitored(t.cfg, val)
        improved = value > prog.best_value
        if improved:
            prog.best_value, prog.best_epoch = value, prog.epoch
        log_epoch(t, prog, row, val, improved)
        # checkpoints: best.pt when val improved, last.pt after every epoch
        check_weights(t, prog.step)
        if t.dist.is_main:
            metrics.append(row)
            tracker.log_epoch(row)
            if improved:
                checkpoint_of(t, prog, split, val.to_json()).save(run / "best.pt")
        save_last(run, t, prog, split)
        t.dist.barrier()
        replan = budget.keep_to(run, t, prog, epoch_times, time.perf_counter() - start, replan)
    if t.stop_requested:  # Ctrl-C: keep the steps done, and say how to go on
        save_last(run, t, prog, split)
        raise KeyboardInterrupt(f"stopped; continue with: attrfit train --resume {run}")


def save_last(run: Path, t: Trainer, prog: Progress, split: SplitRef) -> None:
    """last.pt (the one before kept as last.prev.pt), refused for weights that went non-finite; rank 0 writes."""
    check_weights(t, prog.step)
    if t.dist.is_main:
        checkpoint_of(t, prog, split).save(run / "last.pt", keep_previous=True)


def log_epoch(t: Trainer, prog: Progress, row: dict, val: Results, improved: bool) -> None:
    log.info("epoch %d/%d  loss %.4f  val mean acc %.4f (majority %.4f)  bal acc %.4f  %.0f img/s%s",
             prog.epoch, t.cfg.epochs, row["train_loss"], val.mean.accuracy,
             val.mean.majority_accuracy, val.mean.balanced_accuracy, row["images_per_s"],
             "  * best" if improved else "")
    warn_collapse(val, prog.epoch)


def _empty_results(schema: Schema) -> Results:
    """Stand-in val results on ranks other than 0 (only rank 0 evaluates and writes)."""
    nan = float("nan")
    return Results({h: HeadMetrics.empty() for h in schema.heads}, MeanMetrics(nan, nan, nan, nan))


