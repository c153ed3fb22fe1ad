"""End-to-end behaviours pinned to expectations computed outside the code under test.

The split JSON and the CSV are read here with json/csv, the images decoded here with Pillow
(at their stored size, so no resize is involved), the metrics counted here with numpy, and
the model run as a plain forward pass of the weights a checkpoint holds. The shared run has
learned its task (checked below), so "equal" never means "both constant".

The data is built so that bugs show: the train side's majority class of 'bright' is 'dark'
while on val and test it is 'light' (a baseline computed on the wrong side differs), and
the run keeps an EMA of its weights (evaluating the raw weights differs).

bench/mutations.toml lists the bugs these tests must catch (``make mutate`` runs them).
"""

from __future__ import annotations

import copy
import dataclasses
import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import attrfit.training.final
import attrfit.training.trainer
import attrfit.training.loop as tr
from attrfit.model import checkpoint
from attrfit import cli
from attrfit.recipe.config import TrainConfig, apply
from attrfit.model.net import ModelConfig, build_model
from attrfit.recipe.schedule import ScheduleConfig, lr_at, momentum_at

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

N, SIZE, BATCH, EPOCHS, MAX_LR, EMA = 120, 16, 8, 2, 0.2, 0.8
COLORS = ("red", "green", "blue")  # the dominant RGB channel 0, 1, 2
SIDES = ("train", "val", "test")


# ---------------------------------------------------------------- data, read back independently

def side_of(i: int) -> str:
    return "test" if i % 8 == 0 else "val" if i % 8 == 1 else "train"


def write_learnable(root: Path) -> Path:
    """N 16x16 images: 'color' is the dominant channel (easy), 'bright' adds 60 to every channel.

    The split is written by hand (1/8 test, 1/8 val): a third of the train rows are light,
    two thirds of the val and test rows. Some train rows miss their 'bright' label.
    """
    from attrfit.data.split import fingerprint  # the table's identity only; the sides are chosen here
    from attrfit.data.table import read_table

    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    rows, sides, seen = [], {s: [] for s in SIDES}, dict.fromkeys(SIDES, 0)
    for i in range(N):
        side, c = side_of(i), i % 3
        light = (seen[side] % 3 == 0) == (side == "train")
        seen[side] += 1
        a = rng.integers(0, 40, (SIZE, SIZE, 3)).astype(np.uint8)
        a[..., c] += 150
        a += 60 * light
        name = f"img/{i}.png"
        Image.fromarray(a).save(root / name)
        bright = "" if side == "train" and i % 11 == 5 else ("light" if light else "dark")
        rows.append({"image_path": name, "color": COLORS[c], "bright": bright})
        sides[side].append(name)
    path = root / "labels.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    table = read_table(path)
    split = {"format": 1, "seed": 0, "test_fraction": 0.125, "val_fraction": 0.125, "group_column": None,
             "stratify": "color", "n_rows": N, "fingerprint": fingerprint(table), "schema": table.schema.to_dict(),
             "counts": {s: len(v) for s, v in sides.items()}, "sides": sides}
    (root / "labels.split.json").write_text(json.dumps(split))
    return path


@dataclass
class Truth:
    """What the data is, read with json, csv and Pillow."""

    sides: dict[str, list[str]]  # image_path per side, in the split file's order
    images: dict[str, torch.Tensor]  # uint8 N x 3 x H x W per side
    labels: dict[str, np.ndarray]  # int N x H per side, -1 missing, classes sorted by name
    heads: tuple[str, ...] = ("color", "bright")
    classes: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def read(cls, csv_path: Path) -> Truth:
        sides = json.loads(csv_path.with_name("labels.split.json").read_text())["sides"]
        with open(csv_path, newline="") as f:
            rows = {r["image_path"]: r for r in csv.DictReader(f)}
        heads = ("color", "bright")
        classes = {h: sorted({r[h] for r in rows.values()} - {""}) for h in heads}
        images, labels = {}, {}
        for s in SIDES:
            pix = [np.asarray(Image.open(csv_path.parent / p).convert("RGB")) for p in sides[s]]
            images[s] = torch.from_numpy(np.stack(pix)).permute(0, 3, 1, 2).contiguous()
            labels[s] = np.array([[classes[h].index(rows[p][h]) if rows[p][h] else -1 for h in heads]
                                  for p in sides[s]])
        return cls(sides, images, labels, heads, classes)

    def priors(self) -> list[np.ndarray]:
        """The train side's class frequencies per head (a class without a row counts half a row)."""
        out = []
        for j in range(len(self.heads)):
            col = self.labels["train"][:, j]
            counts = np.maximum([(col == k).sum() for k in range(len(self.classes[self.heads[j]]))], 0.5)
            out.append(counts / counts.sum())
        return out

    def majority(self) -> list[int]:
        """The train side's most common class per head (ties: the lower index)."""
        out = []
        for j in range(len(self.heads)):
            col = self.labels["train"][:, j]
            counts = [(col == k).sum() for k in range(len(self.classes[self.heads[j]]))]
            out.append(int(np.argmax(counts)))
        return out


def plain_probs(ckpt: dict, images: torch.Tensor, weights: str = "ema") -> list[np.ndarray]:
    """Softmax per head of a plain fp32 eval-mode forward pass of ``ckpt[weights]``."""
    a = ckpt["model_args"]
    model = build_model(ModelConfig(**a["cfg"]), a["num_classes"], tuple(a["mean"]), tuple(a["std"]))
    model.load_state_dict(ckpt[weights])
    with torch.no_grad():
        return [o.softmax(1).numpy() for o in model.eval()(images.float())]


def temperature_scaled(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T) from the softmax itself: the probabilities attrfit predict writes for a run."""
    z = np.log(probs.astype(np.float64)) / temperature
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def model_probs(state: dict, ckpt: dict, images: torch.Tensor) -> list[np.ndarray]:
    return plain_probs({**ckpt, "state": state}, images, "state")


def my_metrics(probs: list[np.ndarray], labels: np.ndarray, majority: list[int], priors=None) -> dict:
    """Accuracy, balanced accuracy (mean recall over present classes) and the majority baseline, per head; the
    labels are the most probable classes, or with ``priors`` those of p / prior (the prior correction)."""
    out = {}
    for j, p in enumerate(probs):
        keep = labels[:, j] >= 0
        score = p if priors is None else np.log(np.maximum(p.astype(np.float64), 1e-300)) - np.log(priors[j])
        pred, t = score.argmax(1)[keep], labels[keep, j]
        recalls = [(pred[t == k] == k).mean() for k in np.unique(t)]
        out[j] = {"accuracy": (pred == t).mean(), "balanced_accuracy": np.mean(recalls),
                  "majority_accuracy": (t == majority[j]).mean(),
                  "pred_top_share": np.bincount(pred).max() / len(pred)}
    return out


def read_metrics_csv(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def snapshot(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ---------------------------------------------------------------- runs, trained once, with spies

def config(csv_path: Path, root: Path, **over) -> TrainConfig:
    base = {"data.csv": str(csv_path), "size": f"{SIZE}x{SIZE}", "width": 8, "stages": 2, "epochs": EPOCHS,
            "batch_size": BATCH, "lr": MAX_LR, "optim.ema": EMA, "eval_batch_size": 64, "report": False,
            "precision": "fp32", "seed": 0, "data.cache_dir": str(root / "cache")}
    return apply(TrainConfig(), {**base, **over})


@dataclass
class Spied:
    """What the loop really did: optimizer hyper-parameters per step, batches, weights, evaluations."""

    run: Path | None = None
    hypers: list[list[tuple[float, float]]] = field(default_factory=list)  # per optimizer: (lr, momentum) per step
    batches: list[tuple[int, torch.Tensor, torch.Tensor]] = field(default_factory=list)  # (step, x, y)
    start: list[tuple[dict, dict | None]] = field(default_factory=list)  # (model, ema) before each process's first step
    after_step: list[dict] = field(default_factory=list)  # model weights after each step
    evals: list[dict] = field(default_factory=list)  # each evaluate_images call: images, labels, results, probs, model


def spy_on(mp: pytest.MonkeyPatch, spied: Spied) -> None:
    real_opt, real_step, real_eval = attrfit.training.trainer.make_optimizer, attrfit.training.trainer.train_step, tr.evaluate_images

    def make_optimizer(model, cfg):
        opt = real_opt(model, cfg)
        hypers = []
        spied.hypers.append(hypers)

        def before_step(o, args, kwargs):
            groups = {(g["lr"], g.get("momentum", g.get("betas", (None,))[0])) for g in o.param_groups}
            assert len(groups) == 1, groups  # every parameter group steps with the same values
            hypers.append(groups.pop())

        opt.register_step_pre_hook(before_step)
        return opt

    def train_step(t, x, y, step, *a):
        if len(spied.start) < len(spied.hypers):
            spied.start.append((snapshot(t.model), snapshot(t.ema) if t.ema is not None else None))
        spied.batches.append((step, x.clone(), y.clone()))
        out = real_step(t, x, y, step, *a)
        spied.after_step.append(snapshot(t.model))
        return out

    def evaluate_images(model, images, labels, train_labels, *a, **k):
        results, probs = real_eval(model, images, labels, train_labels, *a, **k)
        spied.evals.append({"images": images.clone(), "labels": labels.clone(), "results": copy.deepcopy(results),
                            "probs": probs, "model": snapshot(model), "decide": k.get("decide")})
        return results, probs

    mp.setattr(attrfit.training.trainer, "make_optimizer", make_optimizer)
    mp.setattr(attrfit.training.trainer, "train_step", train_step)
    mp.setattr(tr, "evaluate_images", evaluate_images)  # validation
    mp.setattr(attrfit.training.final, "evaluate_images", evaluate_images)  # the test side, once


class Crash(Exception):
    pass


@pytest.fixture(scope="session")
def data(tmp_path_factory) -> tuple[Path, Truth]:
    root = tmp_path_factory.mktemp("pinned")
    csv_path = write_learnable(root / "data")
    return csv_path, Truth.read(csv_path)


@pytest.fixture(scope="session")
def learned(data, tmp_path_factory) -> Spied:
    """A 2-epoch run (with EMA) on the learnable data, every step spied on."""
    csv_path, _ = data
    root = tmp_path_factory.mktemp("learned")
    spied = Spied()
    with pytest.MonkeyPatch.context() as mp:
        spy_on(mp, spied)
        spied.run = tr.fit(config(csv_path, root), run_dir=root / "run", progress=False)
    return spied


@pytest.fixture(scope="session")
def resumed(data, tmp_path_factory) -> Spied:
    """The learned run's config, killed at step 3 (mid-epoch, last checkpoint at step 2), then resumed."""
    csv_path, _ = data
    root = tmp_path_factory.mktemp("resumed")
    spied = Spied()
    with pytest.MonkeyPatch.context() as mp:
        spy_on(mp, spied)
        spying_step = attrfit.training.trainer.train_step

        def crash_at_3(t, x, y, step, *a):
            if step == 3:
                raise Crash()
            return spying_step(t, x, y, step, *a)

        mp.setattr(attrfit.training.trainer, "train_step", crash_at_3)
        with pytest.raises(Crash):
            tr.fit(config(csv_path, root, checkpoint_every=2), run_dir=root / "run", progress=False)
        mp.setattr(attrfit.training.trainer, "train_step", spying_step)
        spied.run = tr.fit(None, resume=root / "run", progress=False)
    return spied


# ---------------------------------------------------------------- the run learned, from the train side only

def test_the_shared_run_learned_and_the_data_separates_the_baselines(learned, data):
    _, truth = data
    last = read_metrics_csv(learned.run)[-1]
    assert float(last["val_accuracy_color"]) >= 0.9
    probs = plain_probs(checkpoint.load(learned.run / "last.pt"), truth.images["val"])
    assert np.bincount(probs[0].argmax(1)).max() / len(probs[0]) < 0.6, "predicts (almost) one class"
    bright = truth.heads.index("bright")
    majority = truth.majority()[bright]
    for s in ("val", "test"):  # the premise of the baseline tests: train's majority is the minority here
        col = truth.labels[s][:, bright]
        assert (col == majority).mean() < 0.5 < (col == 1 - majority).mean()


def test_training_batches_are_train_images_with_their_labels(learned, data):
    _, truth = data
    label_of = {bytes(x.numpy().tobytes()): tuple(y) for x, y in zip(truth.images["train"], truth.labels["train"])}
    others = {bytes(x.numpy().tobytes()) for s in ("val", "test") for x in truth.images[s]}
    steps_per_epoch = len(truth.sides["train"]) // BATCH  # full batches only
    assert [step for step, _, _ in learned.batches] == list(range(EPOCHS * steps_per_epoch))
    epochs = []
    for e in range(EPOCHS):
        seen = []
        for _, x, y in learned.batches[e * steps_per_epoch: (e + 1) * steps_per_epoch]:
            assert len(x) == BATCH
            for xi, yi in zip(x, y):
                key = bytes(xi.numpy().tobytes())
                assert key not in others, "a val or test image in a training batch"
                assert label_of[key] == tuple(yi.tolist())
                seen.append(key)
        assert len(set(seen)) == len(seen), "an image twice in one epoch"
        epochs.append(seen)
    assert epochs[0] != epochs[1], "every epoch is shuffled anew"


# ---------------------------------------------------------------- the schedule the optimizer really used

def expected_hypers(n_train: int) -> list[tuple[float, float]]:
    total = EPOCHS * (n_train // BATCH)
    cfg = ScheduleConfig()
    return [(lr_at(k, total, MAX_LR, cfg), momentum_at(k, total, cfg, 0.9)) for k in range(total)]


def assert_hypers(got: list, want: list) -> None:
    assert len(got) == len(want), f"{len(got)} optimizer steps, expected {len(want)}"
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-12)


def test_lr_and_momentum_follow_one_cycle_over_the_real_step_count(learned, data):
    _, truth = data
    want = expected_hypers(len(truth.sides["train"]))
    assert len(learned.hypers) == 1
    assert_hypers(learned.hypers[0], want)
    lrs = [lr for lr, _ in learned.hypers[0]]
    assert lrs[0] == pytest.approx(MAX_LR / 25) and lrs[-1] == pytest.approx(MAX_LR / 25 / 1e4)
    assert max(lrs) > 0.95 * MAX_LR and lrs.index(max(lrs)) < len(lrs) // 2  # one peak, then anneals


def test_a_resumed_run_continues_the_schedule_and_ends_bit_identical(resumed, learned, data):
    _, truth = data
    want = expected_hypers(len(truth.sides["train"]))
    assert len(resumed.hypers) == 2  # two processes: the run and its resume
    assert_hypers(resumed.hypers[0], want[:3])  # steps 0, 1, 2; the crash came before step 3
    assert_hypers(resumed.hypers[1], want[2:])  # resumed from the checkpoint at step 2
    a, b = checkpoint.load(learned.run / "last.pt"), checkpoint.load(resumed.run / "last.pt")
    assert states_equal(a["model"], b["model"]) and states_equal(a["ema"], b["ema"])
    assert read_metrics_csv(learned.run)[-1]["val_mean_accuracy"] == read_metrics_csv(resumed.run)[-1]["val_mean_accuracy"]


# ---------------------------------------------------------------- validation, EMA, the test-side score

def test_ema_is_the_running_average_of_the_trained_weights(learned):
    ema = {k: v.clone() for k, v in learned.start[0][1].items()}
    for (step, _, _), state in zip(learned.batches, learned.after_step):
        decay = min(EMA, (1 + step) / (10 + step))  # warmed up: the first averages follow the weights
        for k, v in state.items():
            ema[k] = decay * ema[k] + (1 - decay) * v if v.is_floating_point() else v.clone()
    saved = checkpoint.load(learned.run / "last.pt")["ema"]
    for k, v in saved.items():
        torch.testing.assert_close(v, ema[k], rtol=1e-5, atol=1e-6, msg=k)


def test_validation_is_a_plain_forward_pass_of_the_ema_on_the_raw_val_images(learned, data):
    _, truth = data
    last = checkpoint.load(learned.run / "last.pt")
    assert len(learned.evals) == EPOCHS + 1  # val after each epoch, then test once
    final = learned.evals[EPOCHS - 1]
    assert torch.equal(final["images"], truth.images["val"])  # raw pixels, in the split file's order
    assert (final["labels"].numpy() == truth.labels["val"]).all()
    want = plain_probs(last, truth.images["val"], "ema")
    for got, p in zip(final["probs"], want):
        np.testing.assert_allclose(got, p, atol=1e-5)
    raw = plain_probs(last, truth.images["val"], "model")
    assert not np.allclose(raw[1], want[1], atol=1e-3), "EMA and raw weights agree: the check above is vacuous"
    # the logged metrics are those of that forward pass under the labels the run will give (the default
    # recipe leaves the balance to the prior-corrected rule: p / train prior), the baseline from the train side
    row = read_metrics_csv(learned.run)[-1]
    mine = my_metrics(want, truth.labels["val"], truth.majority(), priors=truth.priors())
    # this run's val images are too easy for the correction to move a label: check the rule it was given
    # ('bright' is 2/3 dark on the train side: 0.6 / (2/3) < 0.4 / (1/3))
    assert final["decide"]("bright", np.array([[0.6, 0.4]])).tolist() == [1]
    for j, h in enumerate(truth.heads):
        for k in ("accuracy", "balanced_accuracy", "majority_accuracy"):
            assert float(row[f"val_{k}_{h}"]) == pytest.approx(mine[j][k], abs=1e-5), (h, k)
    for k in ("accuracy", "balanced_accuracy", "majority_accuracy"):
        assert float(row[f"val_mean_{k}"]) == pytest.approx(np.mean([m[k] for m in mine.values()]), abs=1e-5), k


def test_results_json_scores_the_best_epoch_on_the_raw_test_images(learned, data):
    _, truth = data
    rows = read_metrics_csv(learned.run)
    values = [float(r["val_mean_accuracy"]) for r in rows]
    best_epoch = values.index(max(values)) + 1  # the first epoch with the highest value
    results = json.loads((learned.run / "results.json").read_text())
    best = checkpoint.load(learned.run / "best.pt")
    assert results["best_epoch"] == best["progress"]["epoch"] == best_epoch
    final = learned.evals[-1]  # finish(): the one look at the test side
    assert torch.equal(final["images"], truth.images["test"])
    want = plain_probs(best, truth.images["test"], "ema")
    for got, p in zip(final["probs"], want):
        np.testing.assert_allclose(got, p, atol=1e-5)
    mine = my_metrics(want, truth.labels["test"], truth.majority())
    for j, h in enumerate(truth.heads):
        for k in ("accuracy", "balanced_accuracy", "majority_accuracy"):
            assert results["heads"][h][k] == pytest.approx(mine[j][k], abs=1e-6), (h, k)


@pytest.mark.parametrize("side", ["test", "val"])
def test_evaluate_scores_a_side_against_the_train_majority(learned, data, side):
    from attrfit.evaluation.scoring import evaluate_checkpoint

    _, truth = data
    got = evaluate_checkpoint(str(learned.run), side=side, progress=False, device="cpu")
    want = plain_probs(checkpoint.load(learned.run / "best.pt"), truth.images[side], "ema")
    mine = my_metrics(want, truth.labels[side], truth.majority())
    for j, h in enumerate(truth.heads):
        for k in ("accuracy", "balanced_accuracy", "majority_accuracy", "pred_top_share"):
            assert getattr(got.heads[h], k) == pytest.approx(mine[j][k], abs=1e-6), (h, k)


# ---------------------------------------------------------------- which epoch becomes best.pt

# Scripted val means for 3 epochs: by accuracy epoch 1 is best, by balanced accuracy epoch 2;
# epoch 3 ties each, and a tie keeps the earlier epoch.
SCRIPT = {"accuracy": [0.9, 0.5, 0.9], "balanced_accuracy": [0.4, 0.8, 0.8]}


@pytest.mark.parametrize("monitor, best_epoch", [("mean_accuracy", 1), ("mean_balanced_accuracy", 2)])
def test_best_checkpoint_and_results_are_the_monitored_argmax(data, tmp_path, monkeypatch, monitor, best_epoch):
    csv_path, truth = data
    spied, states = Spied(), []
    spy_on(monkeypatch, spied)
    real_validate = tr.validate_epoch

    def scripted(t, sides):
        val = real_validate(t, sides)
        scripted_means = {k: values[len(states)] for k, values in SCRIPT.items()}
        val = dataclasses.replace(val, mean=dataclasses.replace(val.mean, **scripted_means))
        states.append(snapshot(t.model))
        return val

    monkeypatch.setattr(tr, "validate_epoch", scripted)
    cfg = config(csv_path, tmp_path, epochs=3, monitor=monitor, **{"optim.ema": 0.0})
    run = tr.fit(cfg, run_dir=tmp_path / "run", progress=False)
    assert [float(r["val_mean_accuracy"]) for r in read_metrics_csv(run)] == SCRIPT["accuracy"]
    assert not states_equal(states[best_epoch - 1], states[-1])
    best = checkpoint.load(run / "best.pt")
    assert best["progress"]["epoch"] == best_epoch
    assert states_equal(best["model"], states[best_epoch - 1])
    results = json.loads((run / "results.json").read_text())
    assert results["best_epoch"] == best_epoch and results["monitor"] == monitor
    scored = spied.evals[-1]  # finish() scored these weights on the test side
    assert torch.equal(scored["images"], truth.images["test"])
    assert states_equal(scored["model"], states[best_epoch - 1])
    mine = my_metrics(model_probs(states[best_epoch - 1], best, truth.images["test"]), truth.labels["test"],
                      truth.majority())
    for j, h in enumerate(truth.heads):
        assert results["heads"][h]["accuracy"] == pytest.approx(mine[j]["accuracy"]), h


# ---------------------------------------------------------------- --init-from

def test_init_from_starts_from_the_source_runs_weights(learned, data, tmp_path, monkeypatch):
    csv_path, _ = data
    spied = Spied()
    spy_on(monkeypatch, spied)
    tr.fit(config(csv_path, tmp_path, epochs=1, init_from=str(learned.run)), run_dir=tmp_path / "run", progress=False)
    source = checkpoint.load(learned.run / "best.pt")["ema"]  # the weights the source run evaluated with
    model, ema = spied.start[0]
    assert states_equal(model, source) and states_equal(ema, source)
    assert not states_equal(model, learned.start[0][0]), "the source equals a fresh init: the check is vacuous"
    assert spied.hypers[0][0][0] == pytest.approx(MAX_LR / 25)  # a new schedule from its start


# ---------------------------------------------------------------- prediction

def test_all_probs_columns_are_the_probabilities_of_their_class(learned, data, tmp_path):
    csv_path, truth = data
    listing = csv_path.with_name("test_side.csv")
    listing.write_text("image_path\n" + "\n".join(truth.sides["test"]) + "\n")
    out = tmp_path / "pred.csv"
    assert cli.main(["predict", str(learned.run), str(listing), "--all-probs", "--decide", "most-probable", "--out",
                     str(out), "--quiet"]) == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["image_path"] for r in rows] == truth.sides["test"]
    schema = json.loads((learned.run / "schema.json").read_text())
    assert schema["classes"] == truth.classes
    want = plain_probs(checkpoint.load(learned.run / "best.pt"), truth.images["test"], "ema")
    temperatures = json.loads((learned.run / "decisions.json").read_text())["heads"]
    want = [temperature_scaled(p, temperatures[h]["temperature"]) for p, h in zip(want, truth.heads)]
    for j, h in enumerate(truth.heads):
        classes = truth.classes[h]
        for i, r in enumerate(rows):
            for k, c in enumerate(classes):
                assert float(r[f"{h}_prob_{c}"]) == pytest.approx(want[j][i, k], abs=2e-6), (h, c, i)
            assert r[h] == classes[want[j][i].argmax()]
            assert float(r[f"{h}_prob"]) == pytest.approx(want[j][i].max(), abs=2e-6)
    assert len({r["color"] for r in rows}) == 3, "a collapsed model would make the columns interchangeable"
