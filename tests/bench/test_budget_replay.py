"""bench/budget_replay.py: a run's logged epoch times replayed through attrfit's own budget rules."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_budget_replay", ROOT / "bench" / "budget_replay.py")
replay = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(replay)


def fake_run(folder: Path, seconds: list[float], epoch_s: float) -> Path:
    """A run folder whose train.log has epoch lines ``seconds`` apart, planned at ``epoch_s`` a epoch."""
    folder.mkdir()
    t = dt.datetime(2026, 1, 1, 12, 0, 0)
    lines = []
    for i, s in enumerate([0.0, *seconds]):
        t += dt.timedelta(seconds=s)
        lines.append(f"{t:%Y-%m-%d %H:%M:%S},000 INFO epoch {i + 1}/9  loss 1.0")
    (folder / "train.log").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plan = {"budget_s": 1000.0, "spent_s": 10.0, "reserve_s": 20.0, "epoch_s": epoch_s, "epochs": 9}
    (folder / "budget.json").write_text(json.dumps(plan))
    return folder


def test_epochs_as_planned_change_nothing_faster_ones_lengthen_today_only(tmp_path):
    run = fake_run(tmp_path / "a", [97.0] * 8, 97.0 * 1.08)  # (1000 - 30) / 104.8 = 9.3: 9 epochs planned
    plan = json.loads((run / "budget.json").read_text())
    assert replay.first_plan(plan) == 9 and replay.epoch_times(run / "train.log") == [97.0] * 8
    assert replay.replay([97.0] * 8, plan)["changes"] == 0
    fast = replay.replay([60.0] * 8, plan)  # 970 / (60 x 1.08) = 14 fit: lengthened early on
    assert fast["epochs"] > 9 and fast["changes"] >= 1 and fast["took_s"] <= 1000
    before = replay.replay([60.0] * 8, plan, lambda seen: seen[-1], lengthen=False)
    assert before == {**before, "epochs": 9, "changes": 0} and before["took_s"] < fast["took_s"]


def test_a_machine_slowed_down_is_cut_and_ends_in_time(tmp_path):
    plan = json.loads((fake_run(tmp_path / "a", [97.0] * 8, 97.0 * 1.08) / "budget.json").read_text())
    slowed = replay.replay([97.0] * 3 + [200.0] * 20, plan)
    assert slowed["changes"] >= 1 and slowed["epochs"] < 9 and slowed["took_s"] <= 1000
