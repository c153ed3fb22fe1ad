"""Decision rules: the prior correction undoes a known prior shift, thresholds maximise their criterion on val,
and the record (decisions.json) reads back and belongs to one checkpoint."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from attrfit.core.errors import AttrfitError
from attrfit.data.schema import Schema
from attrfit.evaluation.decision_fit import (cuts, fit_strength, fit_threshold, positive_class, train_prior)
from attrfit.evaluation.decisions import (DECISIONS_FILE, RULES, CheckpointRef, Decisions, FittedOn, HeadDecision,
                                          check_rule, describe, prior_corrected, thresholded)
from attrfit.evaluation.metrics import head_metrics

MEANS = np.array([0.0, 1.0, 2.0])  # x | class k ~ N(MEANS[k], 1)
TRAIN_PRIOR = np.array([0.8, 0.15, 0.05])


def likelihood(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * (x[:, None] - MEANS[None]) ** 2)


def posterior(x: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """The Bayes posterior under ``prior``: what a calibrated model trained on that prior outputs (float64)."""
    joint = likelihood(x) * prior
    return joint / joint.sum(1, keepdims=True)


def draw(rng, n: int, prior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = rng.choice(3, size=n, p=prior)
    return MEANS[y] + rng.normal(0, 1, n), y


def test_the_prior_correction_undoes_a_known_prior_shift():
    """A calibrated model of a skewed train side, asked on balanced classes: dividing by the train prior gives
    the decision of a model trained on balanced classes (the likelihood's argmax), and the strength fitted on
    a val side drawn like the train side is about 1."""
    rng = np.random.default_rng(0)
    x_test, y_test = draw(rng, 30000, np.full(3, 1 / 3))
    p = posterior(x_test, TRAIN_PRIOR)
    corrected = prior_corrected(p, tuple(TRAIN_PRIOR), 1.0)
    assert np.array_equal(corrected, likelihood(x_test).argmax(1))
    x_val, y_val = draw(rng, 20000, TRAIN_PRIOR)
    strength = fit_strength([posterior(x_val, TRAIN_PRIOR)], y_val[:, None], [tuple(TRAIN_PRIOR)])
    assert 0.75 <= strength <= 1.25
    balanced = {name: head_metrics(pred, y_test, 3, 0).balanced_accuracy
                for name, pred in (("most probable", p.argmax(1)),
                                   ("fitted", prior_corrected(p, tuple(TRAIN_PRIOR), strength)))}
    assert balanced["fitted"] > balanced["most probable"] + 0.1


def test_a_model_already_balanced_gets_a_strength_near_zero():
    """Probabilities of a balanced model (class weights did the correction): the fit leaves them about alone."""
    rng = np.random.default_rng(1)
    x_val, y_val = draw(rng, 20000, TRAIN_PRIOR)
    strength = fit_strength([posterior(x_val, np.full(3, 1 / 3))], y_val[:, None], [tuple(TRAIN_PRIOR)])
    assert -0.25 <= strength <= 0.25


def criterion_of(scores, y, positive, t, criterion):
    pred = np.where(scores >= t, positive, 1 - positive)
    if criterion == "balanced_accuracy":
        return head_metrics(pred, y, 2, 0).balanced_accuracy
    tp = np.sum((pred == positive) & (y == positive))
    return 2 * tp / (np.sum(pred == positive) + np.sum(y == positive))


@pytest.mark.parametrize("criterion", ["balanced_accuracy", "f1"])
@pytest.mark.parametrize("positive", [1, 0])
def test_the_threshold_chosen_on_val_maximises_its_criterion_there(criterion, positive):
    rng = np.random.default_rng(4)
    y = (rng.random(400) < 0.2).astype(int)  # a rare positive class
    y = y if positive == 1 else 1 - y
    scores = np.clip(np.where(y == positive, 0.45, 0.25) + rng.normal(0, 0.15, 400), 0, 1).astype(np.float32)
    y_missing = np.where(np.arange(400) % 9 == 0, -1, y)
    t = fit_threshold(scores, y_missing, positive, criterion)
    keep = y_missing >= 0
    every = [criterion_of(scores[keep], y[keep], positive, c, criterion) for c in [*np.unique(scores), 2.0]]
    assert criterion_of(scores[keep], y[keep], positive, t, criterion) == pytest.approx(max(every), abs=1e-12)
    assert 0 < t < 1 and t != 0.5


def test_thresholds_need_both_classes_and_cuts_lie_between_values():
    assert fit_threshold(np.array([0.2, 0.7]), np.array([1, 1]), 1, "f1") is None
    assert cuts(np.array([0.3, 1.0])).tolist() == [0.15, 0.65, np.nextafter(1.0, 2.0)]
    probs = np.array([[0.75, 0.25], [0.875, 0.125]], np.float32)  # exact in float32
    assert thresholded(probs, 1, 0.25).tolist() == [1, 0]  # at the threshold: positive, as the schema says


def test_priors_and_positive_classes():
    assert train_prior(np.array([1, 1, -1]), 2) == pytest.approx((0.5 / 2.5, 2 / 2.5))  # an unseen class counts 1/2
    assert positive_class(("0", "1"), (0.1, 0.9)) == 1
    assert positive_class(("no", "yes"), (0.7, 0.3)) == 1 and positive_class(("yes", "no"), (0.3, 0.7)) == 0
    assert positive_class(("a", "b", "c"), (0.2, 0.3, 0.5)) is None


def decisions(**over) -> Decisions:
    heads = {"color": HeadDecision(1.7, (0.5, 0.3, 0.2)),
             "bright": HeadDecision(0.8, (0.6, 0.4), 1, {"threshold-balanced": 0.41, "threshold-f1": 0.33})}
    base = dict(heads=heads, strength=0.85, objective="balanced", rule="prior-corrected",
                checkpoint=CheckpointRef("best.pt", 3, 12), fitted_on=FittedOn("val", 9, False))
    return Decisions(**{**base, **over})


def test_the_record_reads_back_and_belongs_to_its_checkpoint(tmp_path):
    d = decisions()
    path = d.write(tmp_path)
    assert path.name == DECISIONS_FILE and Decisions.from_json(json.loads(path.read_text())) == d
    ckpt = SimpleNamespace(progress=SimpleNamespace(epoch=3, step=12), schema=Schema(("color", "bright"), {}))
    assert Decisions.for_checkpoint(tmp_path / "best.pt", ckpt) == d
    later = SimpleNamespace(progress=SimpleNamespace(epoch=4, step=16), schema=ckpt.schema)
    assert Decisions.for_checkpoint(tmp_path / "best.pt", later) is None  # weights the decisions were not fitted on
    assert Decisions.for_checkpoint(tmp_path / "last.pt", ckpt) is None
    assert Decisions.for_checkpoint(tmp_path / "elsewhere" / "best.pt", ckpt) is None  # no decisions.json there
    path.write_text(json.dumps({**d.to_json(), "format": 99}))
    with pytest.raises(AttrfitError, match="not the decision rules attrfit writes"):
        Decisions.for_checkpoint(tmp_path / "best.pt", ckpt)


def test_each_rule_decides_as_it_says():
    d = decisions()
    color = np.array([[0.45, 0.35, 0.2], [0.6, 0.3, 0.1]], np.float32)
    bright = np.array([[0.62, 0.38], [0.7, 0.3]], np.float32)
    assert d.decide("most-probable")("color", color).tolist() == [0, 0]
    assert d.decide("prior-corrected")("color", color).tolist() == prior_corrected(color, (0.5, 0.3, 0.2), 0.85).tolist()
    assert d.decide("threshold-balanced")("bright", bright).tolist() == [0, 0]
    assert d.decide("threshold-f1")("bright", bright).tolist() == [1, 0]
    assert d.decide("threshold-f1")("color", color).tolist() == d.decide("prior-corrected")("color", color).tolist()
    assert d.rules() == RULES


def test_rules_that_do_not_apply_are_refused_by_name():
    no_binary = decisions(heads={"color": HeadDecision(1.0, (0.5, 0.3, 0.2))})
    assert "threshold-f1" not in no_binary.rules()
    with pytest.raises(AttrfitError, match="no head is binary"):
        no_binary.decide("threshold-f1")
    with pytest.raises(AttrfitError, match="no decisions were fitted"):
        check_rule("prior-corrected", ("most-probable",))
    with pytest.raises(AttrfitError, match="not a decision rule; choose one of most-probable"):
        check_rule("argmax")
    assert "0.85" in describe("prior-corrected", decisions()) and "temperature-scaled" in describe("threshold-f1",
                                                                                                 decisions())


def test_while_training_val_is_scored_under_the_labels_the_run_will_give():
    """The balanced objective without class weights: val is scored under the prior correction at strength 1,
    so the monitor and the collapse warning see what the run will answer; class weights, a logit-adjusted loss
    or the accuracy objective keep the most probable class."""
    from attrfit.evaluation.decision_fit import training_rule
    from attrfit.recipe.config import TrainConfig, from_dict, to_dict

    def cfg(**changes):
        d = to_dict(TrainConfig())
        for key, value in changes.items():
            section, _, name = key.rpartition(".")
            (d[section] if section else d)[name] = value
        return from_dict(d)

    schema = Schema(("c",), {"c": ("a", "b", "z")})
    train = np.array([[0]] * 80 + [[1]] * 15 + [[2]] * 5)  # priors 0.80, 0.15, 0.05
    probs = np.array([[0.70, 0.20, 0.10], [0.90, 0.06, 0.04], [0.60, 0.36, 0.04]])
    corrected = training_rule(TrainConfig(), train, schema)("c", probs)
    assert corrected.tolist() == [2, 0, 1]  # 0.7/0.8 < 0.1/0.05; 0.9/0.8 wins; 0.36/0.15 wins
    for other in (cfg(**{"optim.class_weights": True}), cfg(**{"optim.logit_adjust": 1.0}),
                  cfg(objective="accuracy", monitor="mean_accuracy")):
        assert training_rule(other, train, schema)("c", probs).tolist() == [0, 0, 0]
