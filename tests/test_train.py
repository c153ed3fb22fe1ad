import json

import pytest

from conftest import Crash, crash_at_step, PLAIN_RECIPE
import torch

import attrfit.training.trainer
from attrfit.model import checkpoint

from attrfit.core import runs
from attrfit.recipe.config import TrainConfig, apply
from attrfit.core.errors import AttrfitError
from attrfit.evaluation.scoring import evaluate_checkpoint
from attrfit.training.loop import fit
from attrfit.training.trainer import epoch_order
from attrfit.training.losses import LossSpec, multi_head_loss

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def tiny_cfg(csv, **over) -> TrainConfig:
    base = {"data.csv": str(csv), "size": "16x16", "width": 8, "stages": 2, "epochs": 3, "batch_size": 16,
            "lr": 0.05, "eval_batch_size": 64, "report": False, "seed": 1, "precision": "fp32"}
    return apply(TrainConfig(), {**PLAIN_RECIPE, **base, **over})


def weights(run, name="last.pt"):
    return checkpoint.load(run / name)["model"]


def test_loss_skips_missing_labels():
    logits = (torch.randn(4, 3, requires_grad=True), torch.randn(4, 2, requires_grad=True))
    targets = torch.tensor([[0, -1], [1, -1], [2, -1], [0, -1]])
    spec = LossSpec([1.0, 1.0], [None, None])
    total, per_head = multi_head_loss(logits, targets, spec)
    assert per_head[1] == 0 and torch.isfinite(total)
    total.backward()
    assert logits[1].grad.abs().sum() == 0 and logits[0].grad.abs().sum() > 0
    # a missing label in a row does not change the other rows' loss
    t2 = targets.clone()
    t2[1, 0] = -1
    _, ph2 = multi_head_loss(logits, t2, spec)
    manual = torch.nn.functional.cross_entropy(logits[0][[0, 2, 3]], targets[[0, 2, 3], 0])
    assert torch.allclose(ph2[0], manual)


def test_loss_weights_apply():
    logits = (torch.randn(4, 3), torch.randn(4, 2))
    targets = torch.tensor([[0, 1], [1, 0], [2, 1], [0, 0]])
    t1, ph = multi_head_loss(logits, targets, LossSpec([2.0, 0.5], [None, None]))
    assert torch.allclose(t1, 2 * ph[0] + 0.5 * ph[1])


def test_epoch_order_pure():
    assert torch.equal(epoch_order(50, 0, 3), epoch_order(50, 0, 3))
    assert not torch.equal(epoch_order(50, 0, 3), epoch_order(50, 0, 4))


def test_train_writes_run_and_evaluate_matches(tiny, tmp_path):
    run = fit(tiny_cfg(tiny, precision="auto"), run_dir=tmp_path / "run", progress=False)
    for f in ("config.json", "schema.json", "split_ref.json", "metrics.csv", "last.pt", "best.pt", "results.json"):
        assert (run / f).is_file(), f
    rows = runs.MetricsLog(run / "metrics.csv").rows()
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert "val_balanced_accuracy_color" in rows[0] and "val_majority_accuracy_bright" in rows[0]
    results = json.loads((run / "results.json").read_text())
    assert set(results["heads"]) == {"color", "bright"}
    again = evaluate_checkpoint(str(run), side="test", progress=False)
    assert again.heads["color"].accuracy == pytest.approx(results["heads"]["color"]["accuracy"])
    assert again.mean.balanced_accuracy == pytest.approx(results["mean"]["balanced_accuracy"])
    best = checkpoint.load(run / "best.pt")
    assert best["progress"]["epoch"] == results["best_epoch"]


def test_learns_the_tiny_task(tiny, tmp_path):
    run = fit(tiny_cfg(tiny, epochs=8, lr=0.1), run_dir=tmp_path / "run", progress=False)
    val = [float(r["val_accuracy_color"]) for r in runs.MetricsLog(run / "metrics.csv").rows()]
    assert max(val) > 0.8  # colour is trivially visible; majority is ~1/3


def test_run_dir_never_overwritten(tiny, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x").write_text("keep")
    with pytest.raises(AttrfitError, match="already exists"):
        fit(tiny_cfg(tiny), run_dir=tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "x").read_text() == "keep"


def test_resume_after_crash_equals_uninterrupted(tiny, tmp_path, monkeypatch):
    ref = fit(tiny_cfg(tiny), run_dir=tmp_path / "ref", progress=False)
    real_append = runs.MetricsLog.append
    calls = {"n": 0}

    def crashing_append(self, row):
        calls["n"] += 1
        if calls["n"] == 2:  # die after epoch 1 was checkpointed, during epoch 2's bookkeeping
            raise Crash()
        real_append(self, row)

    monkeypatch.setattr(runs.MetricsLog, "append", crashing_append)
    with pytest.raises(Crash):
        fit(tiny_cfg(tiny), run_dir=tmp_path / "b", progress=False)
    monkeypatch.setattr(runs.MetricsLog, "append", real_append)
    assert checkpoint.load(tmp_path / "b" / "last.pt")["progress"]["epoch"] == 1
    fit(None, resume=tmp_path / "b", progress=False)
    for k, v in weights(ref).items():
        assert torch.equal(v, weights(tmp_path / "b")[k]), k
    a = runs.MetricsLog(ref / "metrics.csv").rows()
    b = runs.MetricsLog(tmp_path / "b" / "metrics.csv").rows()
    assert [r["val_mean_accuracy"] for r in a] == [r["val_mean_accuracy"] for r in b]


def test_mid_epoch_checkpoint_resume(tiny, tmp_path, monkeypatch):

    ref = fit(tiny_cfg(tiny, epochs=2, batch_size=8), run_dir=tmp_path / "ref", progress=False)
    restore_step = crash_at_step(monkeypatch, 3)
    with pytest.raises(Crash):
        fit(tiny_cfg(tiny, epochs=2, batch_size=8, checkpoint_every=2), run_dir=tmp_path / "b", progress=False)
    restore_step()
    assert checkpoint.load(tmp_path / "b" / "last.pt")["progress"]["epoch_step"] == 2
    fit(None, resume=tmp_path / "b", progress=False)
    for k, v in weights(ref).items():
        assert torch.equal(v, weights(tmp_path / "b")[k]), k


def test_no_test_image_in_any_training_batch(tiny, tmp_path, monkeypatch):
    from attrfit.data.load import load_data

    cfg = tiny_cfg(tiny, epochs=2)
    seen = []
    real_step = attrfit.training.trainer.train_step

    def spy(t, x, y, step, *a):
        seen.append(x.clone())  # the batch's pixels as gathered, before augmentation
        return real_step(t, x, y, step, *a)

    monkeypatch.setattr(attrfit.training.trainer, "train_step", spy)
    fit(cfg, run_dir=tmp_path / "r", progress=False)
    data = load_data(cfg.data, progress=False)
    flat = lambda t: {bytes(r.numpy().tobytes()) for r in t}  # noqa: E731
    trained = flat(torch.cat(seen))
    assert trained <= flat(data.images[data.sides["train"]])
    assert not trained & flat(data.images[data.sides["test"]])
    assert not trained & flat(data.images[data.sides["val"]])


def test_init_from_and_schema_mismatch(tiny, tmp_path):
    a = fit(tiny_cfg(tiny, epochs=1), run_dir=tmp_path / "a", progress=False)
    b = fit(tiny_cfg(tiny, epochs=1, init_from=str(a), schedule="constant"), run_dir=tmp_path / "b",
            progress=False)
    assert (b / "best.pt").is_file()
    with pytest.raises(AttrfitError, match="architecture does not match"):
        fit(tiny_cfg(tiny, epochs=1, init_from=str(a), width=16), run_dir=tmp_path / "c", progress=False)


def test_an_absurd_lr_is_refused_before_anything_is_written(tiny, tmp_path):
    """(Divergence itself: tests/test_reliability.py, with a planted NaN.)"""
    with pytest.raises(AttrfitError, match=r"--lr .* must be in \(0, 100\]"):
        fit(tiny_cfg(tiny, lr=1e6, schedule="constant", precision="fp32"), run_dir=tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists() and not tiny.with_suffix(".split.json").exists()


def test_evaluate_refuses_a_resplit_with_another_seed(tiny, tmp_path):
    from attrfit.data.split import make_split, save_split
    from attrfit.data.table import read_table

    run = fit(tiny_cfg(tiny, epochs=1), run_dir=tmp_path / "run", progress=False)
    split_file = tiny.with_name("labels.split.json")
    save_split(make_split(read_table(tiny), seed=7), split_file, force=True)  # same table, other sides
    evaluate_checkpoint(str(run), progress=False)  # the run's own copy RUN/split.json is used
    (run / "split.json").unlink()  # a run from before the copies existed
    with pytest.raises(AttrfitError, match="not the split"):
        evaluate_checkpoint(str(run), progress=False)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_trunk_sees_the_batch_normalised_once_in_its_compute_dtype(tiny, precision):
    """The step makes the model's input in the augmentation's pass (model(x, normalised=True)): with every
    augmentation off, what reaches the trunk is exactly the pixels normalised by the model's own mean and std."""
    from attrfit.data.load import load_data
    from attrfit.training.distributed import Dist
    from attrfit.training.sides import make_sides
    from attrfit.training.trainer import build_trainer, train_step

    off = {"flip": False, "translate": 0, "brightness": 0.0, "contrast": 0.0, "mixup": 0.0, "cutmix": 0.0}
    cfg = tiny_cfg(tiny, precision=precision, **off)
    data = load_data(cfg.data, progress=False)
    t = build_trainer(cfg, data.schema, make_sides(data), max_lr=0.05, dist=Dist())
    seen = []
    t.model.trunk.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    x, y = data.images[:8], data.labels[:8]
    want = ((x.float() - t.model.mean) / t.model.std).to(torch.bfloat16 if precision == "bf16" else torch.float32)
    train_step(t, x, y, 0, 0.0, 0.9)
    assert seen[0].dtype == want.dtype
    # one bf16 step apart at most: the fused addcmul and this reference may round a tie differently on other CPUs
    torch.testing.assert_close(seen[0].float(), want.float(), rtol=2 ** -7, atol=1e-5)
