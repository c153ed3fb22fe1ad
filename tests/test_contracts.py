"""The typed contracts between stages: the checkpoint and the split file, each with one reader and writer."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from attrfit.core.errors import AttrfitError
from attrfit.data.split import Split, SplitRef, load_split, make_split, record_duplicates, same_split, save_split
from attrfit.data.table import read_table
from attrfit.model import checkpoint
from attrfit.model.checkpoint import Checkpoint, Progress

SRC = Path(__file__).resolve().parents[1] / "src" / "attrfit"

# what attrfit wrote before the dataclass, in its order (checkpoint_payload + the loop's extra keys)
PAYLOAD_KEYS = ["model_args", "model", "optimizer", "ema", "scaler", "progress", "config", "schema", "max_lr",
                "precision", "precision_check", "split", "data"]


def same_value(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return a == b


# ---------------------------------------------------------------- the checkpoint

@pytest.mark.parametrize("name, extra", [("last.pt", []), ("best.pt", ["val"])])
def test_a_checkpoint_reads_and_writes_back_the_same_payload(trained_tiny, name, extra):
    run, _ = trained_tiny
    raw = checkpoint.load(run / name)
    assert list(raw) == ["format", "attrfit_version", *PAYLOAD_KEYS, *extra]
    ckpt = Checkpoint.load(run / name)
    assert isinstance(ckpt.progress, Progress) and isinstance(ckpt.split, SplitRef)
    assert ckpt.schema.heads == ("color", "bright") and ckpt.size == "16x16" and ckpt.resize == "stretch"
    payload = ckpt.to_payload()
    assert list(payload) == PAYLOAD_KEYS + extra
    assert all(same_value(payload[k], raw[k]) for k in payload)


def test_a_checkpoint_without_its_data_key_takes_the_size_from_its_config(trained_tiny, tmp_path):
    run, _ = trained_tiny
    raw = checkpoint.load(run / "best.pt")
    del raw["data"]  # as attrfit wrote it before the input size had a key of its own
    raw["config"]["data"] = {**raw["config"]["data"], "size": "16x16", "resize": "pad"}
    ckpt = Checkpoint.from_payload(raw)
    assert (ckpt.size, ckpt.resize) == ("16x16", "pad")


def test_a_payload_that_is_no_training_checkpoint_is_a_clear_error(tmp_path):
    p = checkpoint.save({"model": {}, "progress": {"epoch": 1}}, tmp_path / "x.pt")
    with pytest.raises(AttrfitError, match=r"x.pt: not a checkpoint of an attrfit training run \(no '\w+'\)"):
        Checkpoint.load(p)


def test_the_fallback_to_the_previous_checkpoint_is_typed_too(trained_tiny, tmp_path):
    run, _ = trained_tiny
    shutil.copy(run / "last.pt", tmp_path / "last.prev.pt")
    (tmp_path / "last.pt").write_bytes(b"ATTRFIT1 truncated")
    ckpt, used = Checkpoint.load_with_fallback(tmp_path / "last.pt")
    assert used == tmp_path / "last.prev.pt" and ckpt.progress.epoch == 2


def test_no_module_reads_checkpoint_keys_by_string():
    """Only model/checkpoint.py spells the payload's keys; everything else reads Checkpoint attributes."""
    spelled = re.compile(r"""\b(ckpt|checkpoint)(\[["']|\.get\(["'])""")
    offenders = [f"{p.relative_to(SRC)}:{i}" for p in SRC.rglob("*.py") if p.name != "checkpoint.py"
                 for i, line in enumerate(p.read_text().splitlines(), 1) if spelled.search(line)]
    assert offenders == []


# ---------------------------------------------------------------- the split file

def test_a_split_round_trips_through_its_dict(tiny):
    table = read_table(tiny)
    split = record_duplicates(make_split(table, seed=2), table)
    d = split.to_dict()
    assert set(d) == {"format", "seed", "test_fraction", "val_fraction", "group_column", "stratify", "n_rows",
                      "fingerprint", "schema", "counts", "assignment", "sides", "row_digests",
                      "exact_duplicates_across_sides"}
    assert Split.from_dict(json.loads(json.dumps(d))) == split


def test_an_older_split_file_loads_and_is_written_back_without_invented_keys(tiny, tmp_path):
    table = read_table(tiny)
    d = make_split(table, seed=1).to_dict()
    for key in ("assignment", "schema", "row_digests", "counts", "n_rows"):  # keys older files lack
        del d[key]
    (tmp_path / "old.json").write_text(json.dumps(d))
    split = load_split(tmp_path / "old.json")
    assert split.counts == {s: len(d["sides"][s]) for s in ("train", "val", "test")}
    assert split.schema is None and split.assignment is None
    save_split(split, tmp_path / "copy.json")
    written = json.loads((tmp_path / "copy.json").read_text())
    assert not {"assignment", "schema", "row_digests", "exact_duplicates_across_sides"} & set(written)
    assert written["sides"] == d["sides"]


def test_a_recorded_split_matches_by_fingerprint_and_assignment(tiny):
    split = make_split(read_table(tiny), seed=0)
    ref = split.ref("s.json")
    assert same_split(ref, split)
    assert same_split(dataclasses.replace(ref, assignment=None), split)  # recorded before assignments were
    assert not same_split(ref, make_split(read_table(tiny), seed=5))
    assert not same_split(dataclasses.replace(ref, fingerprint="0" * 64), split)


def test_a_split_is_frozen(tiny):
    split = make_split(read_table(tiny))
    with pytest.raises(dataclasses.FrozenInstanceError):
        split.seed = 3


# ---------------------------------------------------------------- the training loop

def test_every_function_of_the_training_loop_fits_on_a_screen():
    tree = ast.parse((SRC / "training" / "loop.py").read_text())
    lengths = {n.name: n.end_lineno - n.lineno + 1 for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert max(lengths.values()) <= 60, lengths
    train = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "train_epochs")
    calls = {ast.unparse(c.func) for c in ast.walk(train) if isinstance(c, ast.Call)}
    # the steps, validation and both checkpoints are in the one loop, not behind callbacks
    assert {"trainer.train_step", "validate_epoch", "save_last"} <= calls
    assert any(c.endswith(".save") for c in calls)


def test_every_docstring_example_holds():
    """The examples in docstrings are run, so one cannot go stale (budget.replan's did when MARGIN changed)."""
    import doctest
    import importlib
    import pkgutil

    import attrfit

    failed = {}
    for info in pkgutil.walk_packages(attrfit.__path__, "attrfit."):
        if info.name == "attrfit.__main__":  # runs the command line on import
            continue
        result = doctest.testmod(importlib.import_module(info.name), report=False)
        if result.failed:
            failed[info.name] = result.failed
    assert not failed, f"docstring examples that no longer hold (run pytest --doctest-modules src): {failed}"
