"""``train --budget``: the plan is a pure function of measured times, leaves no trace, and a resume keeps it.

Wall time itself is never asserted (it is the machine's business): the measured times or
the epoch count are fixed by monkeypatching where a test needs a definite number.
"""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
import torch

import attrfit.training.budget as budget
import attrfit.training.trainer
from attrfit.core import runs
from attrfit.core.options import parse_duration
from attrfit.model import checkpoint
from attrfit.recipe.config import TrainConfig, apply
from attrfit.recipe.schedule import lr_at
from attrfit.training.loop import fit
from helpers import Crash, crash_at_step, assert_one_error, cli


def tiny_cfg(csv, **over) -> TrainConfig:
    base = {"data.csv": str(csv), "size": "16x16", "width": 8, "stages": 2, "epochs": 3, "batch_size": 16,
            "lr": 0.05, "eval_batch_size": 64, "report": False, "seed": 1, "precision": "fp32", "threads": 1}
    return apply(TrainConfig(), {**base, **over})


@pytest.fixture
def fixed_length(monkeypatch):
    """For tests that fix the plan's epochs: a run ahead of its deadline is not lengthened (its own tests)."""
    monkeypatch.setattr(budget, "LENGTHEN_UNTIL", 0.0)


def test_durations():
    assert [parse_duration(t) for t in ("90s", "15m", "2h", "1.5h", "600", "15 min")] == \
        [90.0, 900.0, 7200.0, 5400.0, 600.0, 900.0]
    assert [parse_duration(t) for t in ("soon", "0s", "-5m", "15x", "")] == [None] * 5


def test_epochs_fit_what_is_left_and_at_least_one():
    assert budget.epochs_within(900, 60, 40, 20) == 20  # (900 - 60 - 20) / 40 = 20.5
    assert budget.epochs_within(900, 60, 41, 20) == 20
    assert budget.epochs_within(100, 90, 40, 20) == 1  # nothing left: still one epoch


def test_a_bad_budget_is_refused_before_anything_is_written(capsys, tiny, tmp_path):
    code, _, err = cli(capsys, "train", tiny, "--budget", "soon", "--run-dir", tmp_path / "r")
    assert_one_error(code, err, "--budget", "90s, 15m or 2h")
    assert not (tmp_path / "r").exists() and not tiny.with_suffix(".split.json").exists()


def test_plan_from_measured_times(tiny, tmp_path, monkeypatch, fixed_length):
    """Fixed step and validation times: the epochs follow from them, and budget.json says how."""
    monkeypatch.setattr(budget, "time_steps", lambda t, sides: (0.5, 1.0))
    real_time_checkpoint = budget.time_checkpoint
    monkeypatch.setattr(budget, "time_checkpoint", lambda t, folder: real_time_checkpoint(t, folder) and 2.0)
    monkeypatch.setattr(budget, "REPLAN_OFF_BY", float("inf"))  # the real epochs are far faster than these times
    run = fit(tiny_cfg(tiny, budget="40s"), run_dir=tmp_path / "r", progress=False)
    plan = json.loads((run / "budget.json").read_text())
    n_steps = plan["steps_per_epoch"]
    assert plan["save_s"] == 2.0  # the checkpoints an epoch writes are part of the epoch
    assert plan["epoch_s"] == pytest.approx((n_steps * 0.5 + 1.0 + 2 * 2.0) * budget.MARGIN)  # last.pt and best.pt
    assert not list(run.glob(".budget-timing*"))  # the timing checkpoint is gone
    assert plan["epochs"] == budget.epochs_within(40, plan["spent_s"], plan["epoch_s"], plan["reserve_s"])
    assert plan["spent_s"] > 0  # reading the data and timing the steps came off the budget
    assert runs.read_json(run / "config.json")["epochs"] == plan["epochs"]
    assert len(runs.MetricsLog(run / "metrics.csv").rows()) == plan["epochs"] and plan["took_s"] > 0


def test_a_budget_run_equals_the_same_epochs_given_directly(tiny, tmp_path, monkeypatch, fixed_length):
    """The timing steps leave no trace, and the schedule is as long as the planned epochs."""
    monkeypatch.setattr(budget, "epochs_within", lambda *a: 2)
    planned = fit(tiny_cfg(tiny, budget="10m", epochs=7), run_dir=tmp_path / "b", progress=False)
    direct = fit(tiny_cfg(tiny, epochs=2), run_dir=tmp_path / "d", progress=False)
    a, b = checkpoint.load(planned / "last.pt"), checkpoint.load(direct / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["progress"]["step"] == b["progress"]["step"]


def test_resume_keeps_the_plan(tiny, tmp_path, monkeypatch, fixed_length):
    monkeypatch.setattr(budget, "epochs_within", lambda *a: 3)
    restore_step = crash_at_step(monkeypatch, 4)  # after the checkpoint at the end of epoch 1 or 2
    with pytest.raises(Crash):
        fit(tiny_cfg(tiny, budget="10m"), run_dir=tmp_path / "r", progress=False)
    restore_step()
    monkeypatch.setattr(budget, "epochs_within", lambda *a: 9)  # a re-plan would show
    run = fit(None, resume=tmp_path / "r", progress=False)
    assert len(runs.MetricsLog(run / "metrics.csv").rows()) == 3
    assert json.loads((run / "budget.json").read_text())["epochs"] == 3


def test_replan_only_when_the_plan_is_far_off():
    plan = {"budget_s": 600, "spent_s": 20, "reserve_s": 10, "epochs": 10}
    assert budget.replan(plan, [56.9 / budget.MARGIN]) is None  # 10 epochs still fit: the plan holds
    # a little off either way is kept: one epoch is noisy (MARGIN covers small overruns)
    assert budget.replan(plan, [58 / budget.MARGIN]) is None
    assert budget.replan(plan, [50 / budget.MARGIN]) is None
    assert budget.replan(plan, [4.99 / budget.MARGIN]) == 114  # a fast first epoch: more epochs at once
    assert budget.replan(plan, [100 / budget.MARGIN, 100 / budget.MARGIN]) == 5  # twice as slow, twice


def test_one_slow_epoch_does_not_cut_the_plan_two_do():
    """One epoch slowed by the machine's noise must not cut a plan by a third: a cut waits for a second slow
    epoch, and takes the faster of the two."""
    plan = {"budget_s": 600, "spent_s": 20, "reserve_s": 10, "epochs": 10}
    slow, normal = 100 / budget.MARGIN, 56 / budget.MARGIN
    assert budget.replan(plan, [slow]) is None  # wait for the second
    assert budget.replan(plan, [slow, normal]) is None  # noise: the plan holds
    assert budget.replan(plan, [slow, 80 / budget.MARGIN]) == 7  # the faster of two slow epochs
    short = {**plan, "epochs": 3}
    assert budget.replan({**short, "budget_s": 120}, [slow]) == 1  # 3 epochs planned: no later epoch to wait for


def test_a_plan_timed_under_load_is_redone_after_the_first_epoch(tiny, tmp_path, monkeypatch, fixed_length):
    """Steps timed while something else loaded the machine: one epoch planned; the real first
    epoch is fast, so the run plans again (3 epochs), records why, and a resume keeps it."""
    monkeypatch.setattr(budget, "time_steps", lambda t, sides: (100.0, 1.0))  # 100 s a step: "under load"
    monkeypatch.setattr(budget, "epochs_within", lambda budget_s, spent, epoch_s, reserve: 1 if epoch_s > 50 else 3)
    real_step = attrfit.training.trainer.train_step
    steps = {}

    def crash_in_epoch_three(t, x, y, step, *a):
        steps["total"] = t.total_steps
        if step == 2 * steps.setdefault("per_epoch", t.total_steps) + 1:
            raise Crash()
        return real_step(t, x, y, step, *a)

    monkeypatch.setattr(attrfit.training.trainer, "train_step", crash_in_epoch_three)
    with pytest.raises(Crash):
        fit(tiny_cfg(tiny, budget="10m"), run_dir=tmp_path / "r", progress=False)
    plan = json.loads((tmp_path / "r" / "budget.json").read_text())
    assert plan["epochs"] == 3 and plan["replanned"]["measured_epochs"] == 1
    assert plan["replanned"]["after_epoch"] == 1 and plan["replanned"]["first_epoch_s"] < 50
    assert runs.read_json(tmp_path / "r" / "config.json")["epochs"] == 3
    assert steps["total"] == 3 * steps["per_epoch"]  # the schedule was stretched to the new plan
    monkeypatch.setattr(attrfit.training.trainer, "train_step", real_step)
    monkeypatch.setattr(budget, "epochs_within", lambda *a: 9)  # a second re-plan would show
    run = fit(None, resume=tmp_path / "r", progress=False)
    assert len(runs.MetricsLog(run / "metrics.csv").rows()) == 3
    assert json.loads((run / "budget.json").read_text())["epochs"] == 3


def test_a_plan_cut_by_slow_epochs_waits_for_the_second(tiny, tmp_path, monkeypatch, fixed_length):
    """Steps timed far faster than the real epochs: 9 epochs planned, 3 fit. The first slow epoch alone
    cuts nothing; after the second the plan is 3 epochs, recorded with both epochs' times."""
    monkeypatch.setattr(budget, "time_steps", lambda t, sides: (1e-6, 1e-6))  # "a fast machine"
    monkeypatch.setattr(budget, "time_checkpoint", lambda t, folder: 0.0)
    monkeypatch.setattr(budget, "epochs_within", lambda budget_s, spent, epoch_s, reserve: 9 if epoch_s < 1e-3 else 3)
    run = fit(tiny_cfg(tiny, budget="10m"), run_dir=tmp_path / "r", progress=False)
    plan = json.loads((run / "budget.json").read_text())
    assert plan["epochs"] == 3 and plan["replanned"]["measured_epochs"] == 9
    assert plan["replanned"]["after_epoch"] == 2 and len(plan["replanned"]["epoch_s"]) == 2
    assert len(runs.MetricsLog(run / "metrics.csv").rows()) == 3
    assert runs.read_json(run / "config.json")["epochs"] == 3


def test_a_run_late_for_its_budget_shortens_its_schedule_and_still_anneals(tiny, tmp_path, monkeypatch, caplog, fixed_length):
    """A machine slower than the plan (here: the reserve for the test scoring made so large that the deadline
    has passed by the end of epoch 1): the schedule is shortened to one more epoch, over which it anneals; the
    run ends with its schedule complete, scores the test side, and says so in the log and budget.json."""
    monkeypatch.setattr(budget, "epochs_within", lambda *a: 3)
    monkeypatch.setattr(budget, "REPLAN_OFF_BY", float("inf"))
    real_plan = budget.plan
    monkeypatch.setattr(budget, "plan", lambda *a: dataclasses.replace(real_plan(*a), reserve_s=1e6))
    with caplog.at_level("INFO", logger="attrfit"):
        run = fit(tiny_cfg(tiny, budget="10m"), run_dir=tmp_path / "r", progress=False)
    plan = runs.read_json(run / "budget.json")
    assert plan["epochs"] == 2 and plan["shortened"] == {**plan["shortened"], "after_epoch": 1, "planned_epochs": 3}
    assert runs.read_json(run / "config.json")["epochs"] == 2
    assert len(runs.MetricsLog(run / "metrics.csv").rows()) == 2 and (run / "results.json").exists()
    assert "shortened to end after epoch 2" in caplog.text
    last = checkpoint.load(run / "last.pt")
    per_epoch = plan["steps_per_epoch"]
    assert last["progress"]["step"] == 2 * per_epoch  # the whole (shortened) schedule ran
    cfg = tiny_cfg(tiny)
    end_lr = lr_at(2 * per_epoch - 1, 2 * per_epoch, 0.05, cfg.schedule)
    assert float(runs.MetricsLog(run / "metrics.csv").rows()[-1]["lr"]) == pytest.approx(end_lr)
    assert end_lr < 0.01 * 0.05  # annealed: the last step's LR is near the schedule's floor, not its peak


def test_a_run_that_slows_down_late_shortens_its_schedule_then(tiny, tmp_path, monkeypatch, fixed_length):
    """Epochs fine at first (the re-plan holds), then the deadline draws near in epoch 3 of 5 (a machine
    slowing down): the schedule ends after epoch 4, annealed over it."""
    monkeypatch.setattr(budget, "epochs_within", lambda *a: 5)
    monkeypatch.setattr(budget, "REPLAN_OFF_BY", float("inf"))
    real_step = attrfit.training.trainer.train_step

    def deadline_near_in_epoch_three(t, x, y, step, *a):
        if step == 3 * (t.total_steps // t.cfg.epochs) - 1:
            t.deadline = time.perf_counter() + 1e-3
        return real_step(t, x, y, step, *a)

    monkeypatch.setattr(attrfit.training.trainer, "train_step", deadline_near_in_epoch_three)
    run = fit(tiny_cfg(tiny, budget="10m"), run_dir=tmp_path / "r", progress=False)
    plan = runs.read_json(run / "budget.json")
    assert plan["epochs"] == 4 and plan["shortened"]["after_epoch"] == 3
    assert checkpoint.load(run / "last.pt")["progress"]["step"] == 4 * plan["steps_per_epoch"]


def test_a_budget_run_ends_annealed_and_in_time_where_checkpoints_dominate(tmp_path):
    """200 images at 32x32: an epoch is mostly its checkpoint writes and validation. The run ends inside its
    budget with its whole schedule trained, however the plan was re-made on the way."""
    from helpers import write_tiny

    csv_path = write_tiny(tmp_path / "data", n=200, size=32)
    run = fit(tiny_cfg(csv_path, budget="10s", size="32x32", epochs=1, threads=1), run_dir=tmp_path / "r",
              progress=False)
    plan = runs.read_json(run / "budget.json")
    rows = runs.MetricsLog(run / "metrics.csv").rows()
    last = checkpoint.load(run / "last.pt")
    assert len(rows) == plan["epochs"] == runs.read_json(run / "config.json")["epochs"]
    assert last["progress"]["step"] == plan["epochs"] * plan["steps_per_epoch"]  # the schedule ran to its end
    assert plan["took_s"] <= plan["budget_s"]


def test_a_zero_budget_is_refused_as_too_small_not_as_not_a_duration(capsys, tiny, tmp_path):
    code, _, err = cli(capsys, "train", tiny, "--budget", "0s", "--run-dir", tmp_path / "r")
    assert_one_error(code, err, "--budget", "above 0")
    assert "a duration such as" not in err


def test_a_budget_below_what_a_run_needs_says_so(tiny, tmp_path, monkeypatch, caplog):
    """A budget smaller than the time spent, one epoch and the reserve for scoring and the report: one epoch is
    trained, and the log says the run will take longer than the budget, and why."""
    monkeypatch.setattr(budget, "time_steps", lambda t, sides: (2.0, 1.0))  # one epoch alone is over 5 s
    monkeypatch.setattr(budget, "REPLAN_OFF_BY", float("inf"))
    with caplog.at_level("WARNING", logger="attrfit"):
        run = fit(tiny_cfg(tiny, budget="5s"), run_dir=tmp_path / "r", progress=False)
    plan = runs.read_json(run / "budget.json")
    assert plan["epochs"] == 1 and plan["planned_s"] > 5
    assert "--budget 5s is less than this run needs" in caplog.text and "kept for the test scoring" in caplog.text


def test_a_run_whose_epochs_left_would_end_past_a_deadline_still_ahead_shortens_then(tiny, tmp_path, monkeypatch, fixed_length):
    """Not a deadline already passed: at the end of epoch 2 of 5 the deadline is 250 s away, but the 3 epochs left,
    at 100 s each, would end past it. The schedule is cut to the epochs that fit with the margin, 2 more
    (250 / (100 x 1.08) = 2.3), and anneals over them."""
    monkeypatch.setattr(budget, "epochs_within", lambda *a: 5)
    monkeypatch.setattr(budget, "REPLAN_OFF_BY", float("inf"))
    real_keep_to = budget.keep_to

    def epochs_of_100_s(run, t, prog, epoch_times, epoch_s, replan):
        if prog.epoch == 2:
            t.deadline = time.perf_counter() + 250.0
        assert t.deadline > time.perf_counter() + 200  # never past: the cut comes from the epochs left alone
        return real_keep_to(run, t, prog, epoch_times, 100.0, replan)

    monkeypatch.setattr(budget, "keep_to", epochs_of_100_s)
    run = fit(tiny_cfg(tiny, budget="10m"), run_dir=tmp_path / "r", progress=False)
    plan = runs.read_json(run / "budget.json")
    assert plan["epochs"] == 4 and plan["shortened"] == {**plan["shortened"], "after_epoch": 2, "planned_epochs": 5}
    assert checkpoint.load(run / "last.pt")["progress"]["step"] == 4 * plan["steps_per_epoch"]


def test_the_pace_is_the_mean_so_far_so_one_slow_epoch_cuts_nothing_a_slower_machine_does():
    """20 epochs of 15 s, then one of 24 s (the machine's noise): the pace is their mean, 15.4 s, and the 24
    left still fit 400 s. Two slow epochs in the last three (a machine slowed down): the pace is their
    median, 23 s, and the plan is cut."""
    times = [15.0] * 20 + [24.0]
    assert budget.pace(times) == pytest.approx(324 / 21)
    assert budget.refit(21, 45, budget.pace(times), 400.0) is None  # 24 x 15.4 = 370 s: they fit
    assert budget.refit(21, 45, 24.0, 400.0) == 21 + 15  # had the slow epoch been the pace: 400 / (24 x 1.08)
    slower = times + [23.0]
    assert budget.pace(slower) == 23.0 and budget.refit(22, 45, 23.0, 380.0) == 22 + 15


def test_a_run_ahead_of_its_deadline_is_lengthened_early_in_its_schedule_only():
    # 10 epochs planned, 4 done, 600 s left at 40 s each: 13 fit with the margin where 6 were left
    assert budget.refit(4, 10, 40.0, 600.0) == 4 + 13
    assert budget.refit(6, 10, 40.0, 600.0) is None  # 60% of the schedule done: the LR has annealed far
    assert budget.refit(4, 10, 40.0, 300.0) is None  # 6 left, 6 fit (300 / 43.2 = 6.9): kept
    # small gains are not taken: 10% of the epochs planned, at least 2, must be spare
    assert budget.refit(10, 100, 1.0, 99 * budget.MARGIN) is None
    assert budget.refit(10, 100, 1.0, 100 * budget.MARGIN + 1e-6) == 110


def test_a_run_faster_than_planned_lengthens_its_schedule_and_still_anneals(tiny, tmp_path, monkeypatch, caplog):
    """5 epochs planned; after epoch 1 the epochs take 100 s and 700 s are left: 6 fit with the margin where 4
    were left, so the schedule is lengthened to 7 epochs, runs them all, and anneals over its end."""
    monkeypatch.setattr(budget, "epochs_within", lambda *a: 5)
    monkeypatch.setattr(budget, "REPLAN_OFF_BY", float("inf"))
    real_keep_to = budget.keep_to

    def epochs_of_100_s(run, t, prog, epoch_times, epoch_s, replan):
        t.deadline = time.perf_counter() + 800.0 - 100.0 * prog.epoch  # 100 s pass with each epoch
        return real_keep_to(run, t, prog, epoch_times, 100.0, replan)

    monkeypatch.setattr(budget, "keep_to", epochs_of_100_s)
    with caplog.at_level("INFO", logger="attrfit"):
        run = fit(tiny_cfg(tiny, budget="10m"), run_dir=tmp_path / "r", progress=False)
    plan = runs.read_json(run / "budget.json")
    assert plan["epochs"] == 7 and plan["lengthened"] == {"after_epoch": 1, "epoch_s": 100.0, "planned_epochs": 5}
    assert "shortened" not in plan and "lengthened to end after epoch 7" in caplog.text
    assert runs.read_json(run / "config.json")["epochs"] == 7
    per_epoch = plan["steps_per_epoch"]
    assert checkpoint.load(run / "last.pt")["progress"]["step"] == 7 * per_epoch
    end_lr = lr_at(7 * per_epoch - 1, 7 * per_epoch, 0.05, tiny_cfg(tiny).schedule)
    assert float(runs.MetricsLog(run / "metrics.csv").rows()[-1]["lr"]) == pytest.approx(end_lr)
