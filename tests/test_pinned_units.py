"""Split, data, cache, metrics, loss and evaluation rules pinned to hand-made expectations.

No training here: each test builds its own small input, computes what the answer must be by
hand or with plain numpy/Pillow/json/csv, and compares. bench/mutations.toml lists the bugs
these tests must catch.
"""

from __future__ import annotations

import csv
import json
import logging
import os

import numpy as np
import pytest
import torch
from conftest import write_tiny
from PIL import Image
from torch import nn

from attrfit import cli
from attrfit.core.errors import AttrfitError
from attrfit.evaluation.results import Results
from attrfit.evaluation.scoring import evaluate_images, format_table, predict_probs
from attrfit.evaluation.metrics import collapsed, head_metrics
from attrfit.data.split import fingerprint, make_split, verify_split
from attrfit.data.table import read_table
from attrfit.data.schema import Schema
from attrfit.training.loop import warn_collapse
from attrfit.training.losses import LossSpec, class_weights, multi_head_loss

SIDES = ("train", "val", "test")


def read_rows(csv_path) -> list[dict]:
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


def write_rows(csv_path, rows: list[dict]) -> None:
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


# ---------------------------------------------------------------- metrics and the baseline

def test_balanced_accuracy_is_mean_recall_over_the_classes_present():
    target = np.array([0, 0, 0, 1, -1, -1])  # class 2 never occurs; two rows unlabelled
    pred = np.array([0, 0, 1, 1, 2, 2])
    m = head_metrics(pred, target, 3, majority_class=0)
    assert m.accuracy == pytest.approx(3 / 4)
    assert m.balanced_accuracy == pytest.approx((2 / 3 + 1) / 2)
    assert m.majority_accuracy == pytest.approx(3 / 4)  # of the targets, not of the predictions
    assert m.pred_top_share == pytest.approx(2 / 4) and m.n == 4  # labelled rows only


class Lookup(nn.Module):
    """A 'model' whose logits for image i are row x[i, 0, 0, 0] of a fixed table."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return (self.logits[x[:, 0, 0, 0].long()],)


def test_the_majority_baseline_comes_from_the_train_labels_not_the_evaluated_ones():
    schema = Schema(("bright",), {"bright": ("dark", "light")})
    images = torch.arange(6, dtype=torch.uint8).view(6, 1, 1, 1).expand(6, 3, 2, 2).contiguous()
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([[1], [1], [1], [1], [0], [0]])  # evaluated side: 'light' is the majority
    train_labels = torch.tensor([[0], [0], [0], [1], [-1]])  # train side: 'dark' is
    results, probs = evaluate_images(Lookup(logits), images, labels, train_labels, schema, torch.device("cpu"))
    m = results.heads["bright"]
    assert m.majority_accuracy == pytest.approx(2 / 6)  # always 'dark' on the evaluated rows
    assert m.accuracy == pytest.approx(4 / 6)
    np.testing.assert_allclose(probs[0], logits.softmax(1).numpy(), atol=1e-6)


# ---------------------------------------------------------------- the collapse warning (>= 95% one class)

def val_with_share(share: float) -> Results:
    return Results.from_json({"heads": {"gender": {"n": 200, "pred_top_share": share, "accuracy": 0.5,
                                                   "balanced_accuracy": 0.5, "majority_accuracy": 0.5}},
                              "mean": {"accuracy": 0.5, "balanced_accuracy": 0.5, "majority_accuracy": 0.5}})


@pytest.mark.parametrize("share, fires", [(0.951, True), (0.95, True), (0.949, False), (1.0, True), (0.6, False)])
def test_collapse_warning_fires_from_95_percent(caplog, share, fires):
    caplog.set_level(logging.WARNING, logger="attrfit")
    warn_collapse(val_with_share(share), epoch=3)
    assert ("collapsed to one class" in caplog.text and "gender" in caplog.text) == fires
    assert ("<- collapsed to one class" in format_table(val_with_share(share))) == fires


def test_pred_top_share_and_collapsed_count_labelled_rows():
    target = np.array([0] * 10 + [1] * 10 + [-1] * 5)
    pred = np.array([0] * 19 + [1] + [1] * 5)  # 19 of the 20 labelled rows say 0: exactly 95%
    assert head_metrics(pred, target, 2, 0).pred_top_share == pytest.approx(0.95)
    assert collapsed(pred, target)
    pred[18] = 1  # 18 of 20: 90%
    assert not collapsed(pred, target)


# ---------------------------------------------------------------- the loss

def test_class_weights_are_inverse_frequency_with_mean_one():
    labels = torch.tensor([[0, 1], [0, -1], [0, 1], [1, 1]])  # head 0: 3 x 0, 1 x 1; head 1: only class 1 of 3
    w = class_weights(labels, [2, 3])
    torch.testing.assert_close(w[0], torch.tensor([0.5, 1.5]))  # 4/(2*3), 4/(2*1), normalised to mean 1
    torch.testing.assert_close(w[1], torch.tensor([0.0, 1.0, 0.0]))  # absent classes weigh nothing
    root = class_weights(labels, [2, 3], power=0.5)[0]  # sqrt(1/3) : sqrt(1), normalised to mean 1
    torch.testing.assert_close(root, torch.tensor([2 / (1 + 3**0.5), 2 * 3**0.5 / (1 + 3**0.5)]))


def test_label_smoothing_and_missing_labels_in_the_loss():
    torch.manual_seed(0)
    logits = (torch.randn(5, 3),)
    targets = torch.tensor([[2], [0], [-1], [1], [-1]])
    _, per_head = multi_head_loss(logits, targets, LossSpec([1.0], [None], label_smoothing=0.2))
    keep = targets[:, 0] >= 0
    logp = logits[0][keep].log_softmax(1)
    smooth = torch.full((3, 3), 0.2 / 3) + 0.8 * torch.eye(3)[targets[keep, 0]]  # (1 - e) one-hot + e / K
    assert float(per_head[0]) == pytest.approx(float(-(smooth * logp).sum(1).mean()), rel=1e-5)


# ---------------------------------------------------------------- test-time augmentation

def test_tta_averages_with_the_left_right_mirror():
    from attrfit.model.net import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(width=8, stages=2), [3]).eval()
    x = torch.randint(0, 256, (4, 3, 16, 12), dtype=torch.uint8)
    with torch.no_grad():
        plain = model(x)[0].softmax(1)
        mirror = model(torch.from_numpy(x.numpy()[:, :, :, ::-1].copy()))[0].softmax(1)
        upside = model(torch.from_numpy(x.numpy()[:, :, ::-1, :].copy()))[0].softmax(1)
    assert not torch.allclose(mirror, upside, atol=1e-4)  # the axis matters on these images
    got = predict_probs(model, x, torch.device("cpu"), tta=True)[0]
    np.testing.assert_allclose(got, ((plain + mirror) / 2).numpy(), atol=1e-6)


# ---------------------------------------------------------------- the split

def imbalanced_table(root, n=200, groups=None):
    """'color' 70% blue, 20% green, 10% red (by row), 'bright' alternating."""
    path = write_tiny(root, n=n, missing_every=0, groups=groups)
    rows = read_rows(path)
    for i, r in enumerate(rows):
        k = i % 10
        r["color"] = "blue" if k < 7 else "green" if k < 9 else "red"
    write_rows(path, rows)
    return path


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_sizes_and_class_shares_follow_the_fractions(tmp_path, seed):
    path = imbalanced_table(tmp_path / f"s{seed}")
    color = {r["image_path"]: r["color"] for r in read_rows(path)}
    split = make_split(read_table(path), test_fraction=0.15, val_fraction=0.1, seed=seed)
    sides = split.sides
    assert sorted(p for s in SIDES for p in sides[s]) == sorted(color)
    assert abs(len(sides["test"]) - 30) <= 2 and abs(len(sides["val"]) - 20) <= 2
    for c, count in (("blue", 140), ("green", 40), ("red", 20)):  # stratified: each class splits the same way
        assert abs(sum(color[p] == c for p in sides["test"]) - 0.15 * count) <= 1, c
        assert abs(sum(color[p] == c for p in sides["val"]) - 0.10 * count) <= 1, c


def test_split_keeps_each_group_on_one_side_reading_the_files(tmp_path, capsys):
    path = imbalanced_table(tmp_path, n=120, groups=30)
    assert cli.main(["split", str(path), "--group-column", "pid"]) == 0
    sides = json.loads(path.with_name("labels.split.json").read_text())["sides"]
    group = {r["image_path"]: r["pid"] for r in read_rows(path)}
    side_of_group = {}
    for s in SIDES:
        for p in sides[s]:
            side_of_group.setdefault(group[p], set()).add(s)
    assert len(side_of_group) == 30 and all(len(v) == 1 for v in side_of_group.values())
    assert all(sides[s] for s in SIDES)


def test_the_fingerprint_covers_the_group_column(tmp_path):
    path = imbalanced_table(tmp_path, n=60, groups=10)
    before = read_table(path, group_column="pid")
    split = make_split(before, seed=0)
    rows = read_rows(path)
    rows[0]["pid"] = "p999"  # one image moved to another person: the groups, and so the split, are stale
    write_rows(path, rows)
    after = read_table(path, group_column="pid")
    assert fingerprint(after) != fingerprint(before)
    with pytest.raises(AttrfitError, match="does not match"):
        verify_split(split, after)


# ---------------------------------------------------------------- the data each side gets, decoded here

def test_each_side_holds_its_own_images_and_labels_pixel_for_pixel(tmp_path):
    from attrfit.data.load import DataConfig, load_data

    path = write_tiny(tmp_path / "d", n=60, size=16, groups=20)
    data = load_data(DataConfig(csv=str(path), size="16x16", group_column="pid", cache_dir=str(tmp_path / "c")),
                     progress=False)
    sides = json.loads(path.with_name("labels.split.json").read_text())["sides"]
    rows = {r["image_path"]: r for r in read_rows(path)}
    classes = {"color": ["blue", "green", "red"], "bright": ["dark", "light"]}
    assert data.schema.classes == {h: tuple(c) for h, c in classes.items()}
    for s in SIDES:
        idx = data.sides[s]
        assert len(idx) == len(sides[s]) > 0, s
        want = np.stack([np.asarray(Image.open(path.parent / p).convert("RGB")) for p in sides[s]])
        assert (data.images[idx].permute(0, 2, 3, 1).numpy() == want).all(), s
        labels = [[classes[h].index(rows[p][h]) if rows[p][h] else -1 for h in classes] for p in sides[s]]
        assert data.labels[idx].tolist() == labels, s


def test_an_image_rewritten_in_place_is_decoded_again(tmp_path):
    """Same path, same byte size (BMP), new pixels: only the mtime tells the cache."""
    from attrfit.data.load import DataConfig, load_data

    path = write_tiny(tmp_path / "d", n=40, size=16, fmt="bmp")
    cfg = DataConfig(csv=str(path), size="16x16", cache_dir=str(tmp_path / "c"))
    first = load_data(cfg, progress=False)
    image = path.parent / "img/0.bmp"
    size, mtime = image.stat().st_size, image.stat().st_mtime_ns
    new = np.asarray(Image.open(image).convert("RGB"))[::-1].copy()  # upside down
    Image.fromarray(new).save(image)
    os.utime(image, ns=(mtime + 2_000_000_000, mtime + 2_000_000_000))
    assert image.stat().st_size == size
    again = load_data(cfg, progress=False)
    row = again.image_paths.index("img/0.bmp")
    assert (again.images[row].permute(1, 2, 0).numpy() == new).all()
    assert not torch.equal(again.images[row], first.images[row])
