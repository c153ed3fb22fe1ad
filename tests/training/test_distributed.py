"""torchrun --nproc_per_node=2 on the CPU (gloo), on tiny data."""

import shutil
import subprocess
import sys

import pytest
import torch

from attrfit.model import checkpoint

from attrfit.core import runs
from attrfit.training.distributed import Dist
from attrfit.evaluation.scoring import evaluate_checkpoint
from attrfit.training.trainer import epoch_order

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")


def test_shards_cover_each_image_once_per_epoch():
    order = epoch_order(103, seed=0, epoch=2)
    shards = [Dist(rank=r, world_size=2).shard(order) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 51
    both = torch.cat(shards)
    assert len(set(both.tolist())) == 102  # disjoint; one image dropped to keep ranks equal
    assert set(both.tolist()) <= set(order.tolist())


def torchrun(*args, env=None):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "attrfit", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_torchrun_two_processes_one_run_and_resume(tiny, tmp_path):
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    opts = ["--size", "16x16", "--width", 8, "--stages", 2, "--batch-size", 16, "--quiet", "--no-report",
            "--precision", "fp32", "--device", "cpu"]
    r = torchrun("train", tiny, "--epochs", 2, "--run-dir", tmp_path / "run", *opts, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "run"
    assert (run / "best.pt").is_file() and (run / "results.json").is_file()
    rows = runs.MetricsLog(run / "metrics.csv").rows()
    assert [int(x["epoch"]) for x in rows] == [1, 2]  # one writer: no duplicated rows
    env_json = runs.read_json(run / "environment.json")
    assert env_json["world_size"] == 2
    # metrics logged during training == a single-process evaluation of the same weights
    last = evaluate_checkpoint(str(run / "last.pt"), side="val", progress=False)
    # metrics.csv holds 6 decimals: equal to within half a unit of the last one (abs=1e-9 passed only
    # while the accuracy happened to be a short decimal such as 0.75)
    assert float(rows[-1]["val_mean_accuracy"]) == pytest.approx(last.mean.accuracy, abs=5e-7)
    for k in ("accuracy", "balanced_accuracy", "majority_accuracy"):
        assert float(rows[-1][f"val_{k}_color"]) == pytest.approx(getattr(last.heads["color"], k), abs=1e-6), k
    # ... and the model learned (colour is plain to see): equal is not "both predict one class"
    assert last.heads["color"].accuracy > last.heads["color"].majority_accuracy + 0.3
    assert last.heads["color"].pred_top_share < 0.95
    # resume a distributed run: a copy of the run rolled back to epoch 1 (its last.prev.pt)
    shutil.copytree(run, tmp_path / "run2")
    prev = checkpoint.previous_of(tmp_path / "run2" / "last.pt")
    shutil.copy(prev, tmp_path / "run2" / "last.pt")
    assert checkpoint.load(tmp_path / "run2" / "last.pt")["progress"]["epoch"] == 1
    r = torchrun("train", "--resume", tmp_path / "run2", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    a = checkpoint.load(run / "last.pt")["model"]
    b = checkpoint.load(tmp_path / "run2" / "last.pt")["model"]
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k


def test_failure_on_rank_zero_stops_all(tiny, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep").write_text("x")
    r = torchrun("train", tiny, "--run-dir", tmp_path / "run", "--epochs", 1, "--device", "cpu", "--quiet")
    assert r.returncode != 0
    assert "already exists" in r.stderr
