"""Replay the epoch times of finished ``--budget`` runs through the rules that keep a run to its deadline.

    python bench/budget_replay.py runs/a runs/b            # each run folder's train.log and budget.json
    python bench/budget_replay.py runs/a --slow-from 0.7   # and with the machine twice as slow from 70% on

The rules are attrfit's own (``attrfit.training.budget.pace`` and ``refit``); only time is replayed:
each epoch takes what the run's log says its epochs took (the time between two epoch lines:
training, validation and checkpoints), in order, again from the first when a lengthened plan runs
past the logged epochs. A plan starts at the epochs the run measured before training (the re-plan
after the first epochs is not replayed); the deadline
is the budget less the time spent before training and the reserve, as in the run. Printed per run:
how many times the schedule changed, the epochs it ended with, and the share of the budget used,
under today's rules and under the rule before them (the last epoch's time as the pace, never
lengthened), so a change to the rules can be judged on real machines' noise before a run is spent.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
from pathlib import Path

from attrfit.training import budget


def epoch_times(log: Path) -> list[float]:
    """Seconds between consecutive epoch lines of a run's train.log (the first epoch's start is not logged)."""
    stamps = [dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
              for line in log.read_text(encoding="utf-8").splitlines() if " INFO epoch " in line]
    return [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:])]


def replay(times: list[float], plan: dict, pace=budget.pace, lengthen: bool = True) -> dict:
    """The run again with ``times`` as its epochs: changes of the schedule, epochs, seconds and share used."""
    deadline = plan["budget_s"] - plan["reserve_s"] - plan["spent_s"]  # seconds of epochs
    planned = first_plan(plan)
    now, done, changes, seen = 0.0, 0, 0, []
    until, budget.LENGTHEN_UNTIL = budget.LENGTHEN_UNTIL, (budget.LENGTHEN_UNTIL if lengthen else 0.0)
    try:
        while done < planned:
            seen.append(times[len(seen) % len(times)])
            now, done = now + seen[-1], done + 1
            epochs = budget.refit(done, planned, pace(seen), deadline - now)
            if epochs is not None:
                planned, changes = epochs, changes + 1
    finally:
        budget.LENGTHEN_UNTIL = until
    took = plan["spent_s"] + now + plan["reserve_s"]
    return {"changes": changes, "epochs": planned, "took_s": round(took), "share": round(took / plan["budget_s"], 3)}


def first_plan(plan: dict) -> int:
    """The epochs planned before training, from the times measured then (budget.json keeps them)."""
    return budget.epochs_within(plan["budget_s"], plan["spent_s"], plan["epoch_s"], plan["reserve_s"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run folders trained with --budget")
    p.add_argument("--slow-from", type=float, default=None,
                   help="also replay with every epoch twice as slow from this share of the first plan on")
    args = p.parse_args()
    before = lambda seen: seen[-1]  # noqa: E731 -- the rule before: the last epoch's time, never lengthened
    print("| run | epochs logged | rules | changes | epochs | took s | share of the budget |")
    print("|---|---|---|---|---|---|---|")
    for run in args.runs:
        plan = json.loads((run / "budget.json").read_text())
        times = epoch_times(run / "train.log")
        cases = [("today's", times)]
        if args.slow_from is not None:
            k = math.floor(args.slow_from * first_plan(plan))
            cases.append((f"today's, 2x slower from {args.slow_from:.0%}", times[:k] + [2 * t for t in times] * 10))
        for name, ts in cases:
            for rules, r in ((name, replay(ts, plan)),
                             (name.replace("today's", "before"), replay(ts, plan, before, False))):
                print(f"| {run.name} | {len(times)} | {rules} | {r['changes']} | {r['epochs']} | {r['took_s']} "
                      f"| {r['share']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
