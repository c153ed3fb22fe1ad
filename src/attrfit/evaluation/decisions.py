"""Decision rules: the labels each user needs, from one run's probabilities.

A run's probabilities (temperature-scaled, :mod:`attrfit.evaluation.calibration`) answer more than
one question; the rule that turns them into labels says which:

    most-probable       the most probable class: what plain accuracy rewards
    prior-corrected     the most probable class after dividing by the train side's class frequency to
                        a power (the strength), argmax log p - strength * log prior: what balanced
                        accuracy rewards (post-hoc logit adjustment, Menon et al., ICLR 2021; for
                        calibrated probabilities the best strength is 1). The strength is one number
                        for the run, fitted on the val side for mean balanced accuracy.
    threshold-balanced  binary heads: the second class iff p(positive) >= a threshold chosen per head
    threshold-f1        on the val side for balanced accuracy, or for F1 of the positive class; heads
                        of three classes or more follow prior-corrected.

The positive class of a binary head is '1' where the classes are '0' and '1', else its rarer class on
the train side. What the rules need (temperatures, train priors, the strength, the thresholds, the
run's default rule from its --objective) is fitted once, at the end of training, on the val side,
and saved as ``RUN/decisions.json`` (:class:`Decisions`, its one reader and writer), for best.pt.

Example:
    >>> d = Decisions({"hat": HeadDecision(1.0, (0.9, 0.1), 1, {"threshold-f1": 0.3})}, 1.0, "balanced",
    ...               "prior-corrected", CheckpointRef("best.pt", 3, 30), FittedOn("val", 10, False))
    >>> p = np.array([[0.8, 0.2], [0.95, 0.05]], np.float32)
    >>> [d.decide(r)("hat", p).tolist() for r in ("most-probable", "prior-corrected", "threshold-f1")]
    [[0, 0], [1, 0], [0, 0]]
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from attrfit.core.errors import AttrfitError

log = logging.getLogger(__name__)

MOST_PROBABLE, PRIOR_CORRECTED = "most-probable", "prior-corrected"
THRESHOLD_CRITERIA = {"threshold-balanced": "balanced_accuracy", "threshold-f1": "f1"}
RULES = (MOST_PROBABLE, PRIOR_CORRECTED, *THRESHOLD_CRITERIA)
OBJECTIVE_RULE = {"balanced": PRIOR_CORRECTED, "accuracy": MOST_PROBABLE}  # --objective -> the default rule
# the prior-correction strengths tried on the val side: -1 undoes a correction the training already made
# (class weights), 1 is the correction calibrated probabilities need
STRENGTHS = tuple(round(-1.0 + 0.05 * i, 2) for i in range(61))
BINARY_CLASSES = ("0", "1")  # a head whose classes are exactly these is a binary attribute (1 = present)
DECISIONS_FILE = "decisions.json"
FORMAT = 1
_TINY = np.finfo(np.float64).tiny

Decide = Callable[[str, np.ndarray], np.ndarray]  # (head, N x K probabilities) -> N class indices


def most_probable(head: str, probs: np.ndarray) -> np.ndarray:
    """The most probable class of each row (N x K probabilities of ``head``).

    >>> most_probable("color", np.array([[0.2, 0.8], [0.6, 0.4]])).tolist()
    [1, 0]
    """
    return probs.argmax(1)


def prior_corrected(probs: np.ndarray, prior, strength: float) -> np.ndarray:
    """argmax of ``log p - strength * log prior`` per row (float64, so every caller gets the same answer).

    >>> prior_corrected(np.array([[0.7, 0.3]]), (0.9, 0.1), 1.0).tolist()  # 0.7/0.9 < 0.3/0.1
    [1]
    """
    score = np.log(np.maximum(np.asarray(probs, np.float64), _TINY)) - strength * np.log(np.asarray(prior, np.float64))
    return score.argmax(1)


def thresholded(probs: np.ndarray, positive: int, threshold: float) -> np.ndarray:
    """A binary head's class per row: ``positive`` iff its probability is at least ``threshold``.

    >>> thresholded(np.array([[0.8, 0.2], [0.6, 0.4]], np.float32), 1, 0.3).tolist()
    [0, 1]
    """
    return np.where(np.asarray(probs, np.float64)[:, positive] >= threshold, positive, 1 - positive)


# ---------------------------------------------------------------- the record

@dataclass(frozen=True)
class HeadDecision:
    """What one head's rules need."""

    temperature: float  # divides the logits (1: none)
    prior: tuple[float, ...]  # train-side class frequencies, in class order (a class never seen counts 1/2)
    positive: int | None = None  # binary heads: the class the thresholds are on
    thresholds: dict[str, float] = field(default_factory=dict)  # rule -> threshold on p(positive)


@dataclass(frozen=True)
class CheckpointRef:
    """The checkpoint the decisions were fitted for: its file name and where its training stood."""

    file: str
    epoch: int
    step: int


@dataclass(frozen=True)
class FittedOn:
    side: str  # "val"
    rows: int
    tta: bool


@dataclass(frozen=True)
class Decisions:
    """The fitted decision rules of one checkpoint: ``RUN/decisions.json``."""

    heads: dict[str, HeadDecision]  # in the schema's order
    strength: float  # prior-corrected: p / prior ** strength
    objective: str  # the run's --objective
    rule: str  # its default rule
    checkpoint: CheckpointRef
    fitted_on: FittedOn

    def temperatures(self) -> list[float]:
        return [d.temperature for d in self.heads.values()]

    def rules(self) -> tuple[str, ...]:
        """The rules that apply: the threshold rules only where a head has a threshold."""
        thresholds = any(d.thresholds for d in self.heads.values())
        return tuple(r for r in RULES if thresholds or r not in THRESHOLD_CRITERIA)

    def decide(self, rule: str) -> Decide:
        """The :data:`Decide` function of ``rule``."""
        check_rule(rule, self.rules())
        return RuleOf(rule, self)

    def to_json(self) -> dict:
        return {"format": FORMAT, "objective": self.objective, "rule": self.rule, "strength": self.strength,
                "checkpoint": dataclasses.asdict(self.checkpoint), "fitted_on": dataclasses.asdict(self.fitted_on),
                "heads": {h: {"temperature": d.temperature, "prior": list(d.prior), "positive": d.positive,
                              "thresholds": dict(d.thresholds)} for h, d in self.heads.items()}}

    @classmethod
    def from_json(cls, d: dict, where: str = DECISIONS_FILE) -> Decisions:
        try:
            if d["format"] != FORMAT:
                raise ValueError(f"format {d['format']}")
            heads = {h: HeadDecision(float(x["temperature"]), tuple(float(p) for p in x["prior"]), x["positive"],
                                     {r: float(t) for r, t in x["thresholds"].items()}) for h, x in d["heads"].items()}
            return cls(heads, float(d["strength"]), d["objective"], d["rule"], CheckpointRef(**d["checkpoint"]),
                       FittedOn(**d["fitted_on"]))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise AttrfitError(f"{where}: not the decision rules attrfit writes ({type(e).__name__}: {e})") from None

    def write(self, run: Path) -> Path:
        from attrfit.core import runs

        runs.write_json(Path(run) / DECISIONS_FILE, self.to_json())
        return Path(run) / DECISIONS_FILE

    @classmethod
    def for_checkpoint(cls, path: Path, ckpt) -> Decisions | None:
        """The decisions saved beside checkpoint ``path`` for it (a :class:`attrfit.model.checkpoint.Checkpoint`),
        or None: a run made before decisions were saved with runs, or another checkpoint of the run."""
        from attrfit.core import runs

        file = Path(path).parent / DECISIONS_FILE
        if not file.is_file():
            return None
        d = cls.from_json(runs.read_json(file), str(file))
        if d.checkpoint != CheckpointRef(Path(path).name, ckpt.progress.epoch, ckpt.progress.step):
            log.info("%s was fitted for %s, not %s: its probabilities are used as they are", file,
                     d.checkpoint.file, Path(path).name)
            return None
        if tuple(d.heads) != ckpt.schema.heads:
            raise AttrfitError(f"{file}: its heads are not those of {path}")
        return d


@dataclass(frozen=True)
class RuleOf:
    """A rule's :data:`Decide` function: every label a :class:`Predictor` or a scoring gives goes through one."""

    name: str
    decisions: Decisions | None = field(repr=False)

    def __call__(self, head: str, probs: np.ndarray) -> np.ndarray:
        if self.name == MOST_PROBABLE or self.decisions is None:
            return most_probable(head, probs)
        d = self.decisions.heads[head]
        threshold = d.thresholds.get(self.name)
        if threshold is not None:
            return thresholded(probs, d.positive, threshold)
        return prior_corrected(probs, d.prior, self.decisions.strength)


def check_rule(rule: str, available: tuple[str, ...] = RULES) -> str:
    """``rule`` when it is one of ``available``, else one clear error saying which are."""
    if rule in available:
        return rule
    if rule in RULES:
        why = ("no head is binary (two classes)" if rule in THRESHOLD_CRITERIA and PRIOR_CORRECTED in available else
               "no decisions were fitted for this checkpoint")
        raise AttrfitError(f"--decide {rule} does not apply here ({why}); choose {', '.join(available)}")
    raise AttrfitError(f"--decide {rule!r} is not a decision rule; choose one of {', '.join(RULES)}")


def describe(rule: str, decisions: Decisions | None) -> str:
    """One line saying which rule made a table's numbers, and with what.

    >>> describe("most-probable", None)
    'decision rule most-probable (the most probable class)'
    """
    what = {MOST_PROBABLE: "the most probable class",
            PRIOR_CORRECTED: "p / train prior ** strength, the strength fitted on the val side",
            "threshold-balanced": "per-head thresholds chosen on the val side for balanced accuracy",
            "threshold-f1": "per-head thresholds chosen on the val side for F1"}[rule]
    if decisions is not None:
        if rule == PRIOR_CORRECTED:
            what += f": {decisions.strength:g}"
        if rule in THRESHOLD_CRITERIA and any(not d.thresholds for d in decisions.heads.values()):
            what += f"; heads without one: {PRIOR_CORRECTED}"
        what += "; probabilities temperature-scaled"
    return f"decision rule {rule} ({what})"
