"""Scoring a model on a side (evaluation/scoring.py): the baseline from the train labels, mirror TTA."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from torch import nn

from attrfit.evaluation.scoring import evaluate_images, predict_probs
from attrfit.data.schema import Schema

SIDES = ("train", "val", "test")


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


# ---------------------------------------------------------------- runs with and without decisions.json

NEW_FIELDS = ("decision", "rules", "calibration")


def evaluate_json(capsys, run, *extra) -> tuple[str, dict]:
    import json

    from attrfit import cli

    assert cli.main(["evaluate", str(run), "--json", "--device", "cpu", *extra]) == 0
    text = capsys.readouterr().out
    return text, json.loads(text)


def test_a_run_without_decisions_evaluates_exactly_as_before(trained_tiny, tmp_path, capsys):
    """A run made before decisions were saved (no decisions.json): `evaluate --json` prints what it always did,
    byte for byte: the most probable class's numbers, no rule, no calibration. The same run with decisions
    (the plain recipe's objective is accuracy, so its rule is the most probable class) adds only those."""
    import json
    import shutil

    from attrfit.cli.args import print_json

    run = shutil.copytree(trained_tiny[0], tmp_path / "run")
    _, new = evaluate_json(capsys, run)
    assert new["decision"] == "most-probable" and set(new["rules"]) >= {"most-probable", "prior-corrected"}
    (run / "decisions.json").unlink()
    old_text, old = evaluate_json(capsys, run)
    assert list(old) == ["heads", "mean", "side", "checkpoint", "epoch", "tta"]
    print_json({k: v for k, v in new.items() if k not in NEW_FIELDS})
    assert old_text == capsys.readouterr().out
    assert json.loads(old_text)["heads"] == new["rules"]["most-probable"]["heads"]
    assert not (run / "decisions.json").exists()


def test_a_run_without_decisions_is_asked_another_rule_by_fitting_it_on_val_for_that_scoring(trained_tiny, tmp_path,
                                                                                                capsys):
    import shutil

    from attrfit import cli

    run = shutil.copytree(trained_tiny[0], tmp_path / "run")
    _, saved = evaluate_json(capsys, run, "--decide", "prior-corrected")
    (run / "decisions.json").unlink()
    _, fitted_now = evaluate_json(capsys, run, "--decide", "prior-corrected")
    assert fitted_now["decision"] == "prior-corrected" and fitted_now["heads"] == saved["heads"]
    assert not (run / "decisions.json").exists()  # evaluate writes nothing into the run
    code = cli.main(["predict", str(run), str(trained_tiny[1]), "--decide", "prior-corrected", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "--decide prior-corrected does not apply here (no decisions were fitted" in err
