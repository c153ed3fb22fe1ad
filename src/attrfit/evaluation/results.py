"""Per-head results: the typed contract between scoring and everything that reads metrics.

:func:`attrfit.evaluation.scoring.score` makes a :class:`Results`; the loop, the report, compare,
tracking and the command line read its attributes. On disk (``results.json``, ``evaluate --json``,
best.pt's ``val``) it is the JSON of :meth:`Results.to_json`, read back by :meth:`Results.from_json`::

    {"heads": {HEAD: {"accuracy", "balanced_accuracy", "macro_f1", "majority_accuracy", "n", "pred_top_share"}},
     "mean": {"accuracy", "balanced_accuracy", "majority_accuracy", "macro_f1"},
     "instance": {"mA", "accuracy", "precision", "recall", "f1", "n_images", "n_attributes"},   # binary tables
     "side", "checkpoint", "epoch", "tta",                                # what was scored (evaluate, the report)
     "best_epoch", "monitor", "wall_time_s", "images_per_s",              # a finished run's results.json
     "decision",                          # the decision rule that made heads/mean/instance (runs with decisions.json)
     "rules": {RULE: {"heads", "mean", "instance"}},                      # the numbers of every rule
     "calibration": {"bins", "heads": {HEAD: {"temperature", "ece", "brier", "ece_uncalibrated",
                                               "brier_uncalibrated", "n"}}}}

A metric with no labelled rows is NaN here and ``null`` in the JSON; metadata not known is left out.
A run without decisions.json (made before decision rules were saved with runs) has no ``decision``,
``rules`` or ``calibration``: its numbers are the most probable class's, as they always were.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

from attrfit.core.errors import AttrfitError

NAN = float("nan")


def _number(v) -> float:
    """A metric read from JSON: ``null`` (no labelled rows) and absent (older files) are NaN."""
    return NAN if v is None else float(v)


def _json_number(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


def _metrics_json(m) -> dict:
    """Field by field, in field order: ints stay ints, NaN becomes null."""
    return {f.name: (int(v) if isinstance(v, int) else _json_number(v))
            for f in dataclasses.fields(m) for v in [getattr(m, f.name)]}


def _metrics_from_json(cls, d: dict):
    """The reverse of :func:`_metrics_json`: int fields absent or null are 0, the others NaN."""
    return cls(*(int(d.get(f.name) or 0) if f.type in (int, "int") else _number(d.get(f.name))
                 for f in dataclasses.fields(cls)))


@dataclass(frozen=True)
class HeadMetrics:
    """One head on one side (see :func:`attrfit.evaluation.metrics.head_metrics`); NaN where ``n`` is 0."""

    accuracy: float
    balanced_accuracy: float  # mean recall over the classes present
    macro_f1: float
    majority_accuracy: float  # always answering the train side's most frequent class, on the same rows
    n: int  # labelled rows
    pred_top_share: float  # share of the most frequent prediction (1.0 = collapsed to one class)

    # metrics.csv's val columns per head (val_<field>_<head>) and per mean (val_mean_<field>), in this order
    LOGGED: ClassVar[tuple[str, ...]] = ("accuracy", "balanced_accuracy", "majority_accuracy")

    @classmethod
    def empty(cls) -> HeadMetrics:
        """A head without labelled rows: no score, n = 0."""
        return cls(NAN, NAN, NAN, NAN, 0, NAN)

    @property
    def gain(self) -> float:
        """Accuracy over the majority-class baseline."""
        return self.accuracy - self.majority_accuracy

    def to_json(self) -> dict:
        return _metrics_json(self)

    @classmethod
    def from_json(cls, d: dict) -> HeadMetrics:
        return _metrics_from_json(cls, d)


@dataclass(frozen=True)
class MeanMetrics:
    """Means over the heads with labelled rows (see :func:`attrfit.evaluation.metrics.summarize`)."""

    accuracy: float
    balanced_accuracy: float
    majority_accuracy: float
    macro_f1: float

    @property
    def gain(self) -> float:
        return self.accuracy - self.majority_accuracy

    def to_json(self) -> dict:
        return _metrics_json(self)

    @classmethod
    def from_json(cls, d: dict) -> MeanMetrics:
        return _metrics_from_json(cls, d)


@dataclass(frozen=True)
class InstanceMetrics:
    """The pedestrian-attribute field's metrics of a table of binary attributes (see evaluation/metrics.py)."""

    mA: float  # mean balanced accuracy over attributes
    accuracy: float  # instance-based, averaged over images
    precision: float
    recall: float
    f1: float
    n_images: int
    n_attributes: int

    def to_json(self) -> dict:
        return _metrics_json(self)

    @classmethod
    def from_json(cls, d: dict) -> InstanceMetrics:
        return cls(_number(d.get("mA")), _number(d.get("accuracy")), _number(d.get("precision")),
                   _number(d.get("recall")), _number(d.get("f1")), int(d["n_images"]), int(d["n_attributes"]))


@dataclass(frozen=True)
class RuleMetrics:
    """The per-head numbers of one decision rule (see :mod:`attrfit.evaluation.decisions`)."""

    heads: dict[str, HeadMetrics]
    mean: MeanMetrics
    instance: InstanceMetrics | None = None

    def to_json(self) -> dict:
        out = {"heads": {h: m.to_json() for h, m in self.heads.items()}, "mean": self.mean.to_json()}
        return out if self.instance is None else {**out, "instance": self.instance.to_json()}

    @classmethod
    def from_json(cls, d: dict) -> RuleMetrics:
        return cls({h: HeadMetrics.from_json(m) for h, m in d["heads"].items()}, MeanMetrics.from_json(d["mean"]),
                   InstanceMetrics.from_json(d["instance"]) if d.get("instance") else None)


@dataclass(frozen=True)
class HeadCalibration:
    """How far one head's probabilities can be trusted (see :mod:`attrfit.evaluation.calibration`)."""

    temperature: float  # fitted on the val side (1.0: none)
    ece: float  # expected calibration error of the temperature-scaled probabilities
    brier: float
    ece_uncalibrated: float  # the same of the model's own softmax (temperature 1)
    brier_uncalibrated: float
    n: int  # labelled rows

    def to_json(self) -> dict:
        return _metrics_json(self)

    @classmethod
    def from_json(cls, d: dict) -> HeadCalibration:
        return _metrics_from_json(cls, d)


@dataclass(frozen=True)
class Calibration:
    """Per-head calibration of one side, and the bins its expected calibration error used."""

    heads: dict[str, HeadCalibration]
    bins: int

    def mean(self, field: str) -> float:
        """Mean of ``field`` over the heads with labelled rows (NaN without any)."""
        values = [getattr(c, field) for c in self.heads.values() if c.n > 0]
        return float(sum(values) / len(values)) if values else NAN

    def to_json(self) -> dict:
        return {"bins": self.bins, "heads": {h: c.to_json() for h, c in self.heads.items()}}

    @classmethod
    def from_json(cls, d: dict) -> Calibration:
        return cls({h: HeadCalibration.from_json(c) for h, c in d["heads"].items()}, int(d["bins"]))


# a finished run's fields: results.json writes all four (images_per_s may be null)
RUN_FIELDS = ("best_epoch", "monitor", "wall_time_s", "images_per_s")
SECTIONS = ("rules", "calibration")  # typed sections after the metadata, written only when set


@dataclass(frozen=True)
class Results:
    """Per-head metrics of a model on one side of the split, and what they were computed from.

    >>> r = attrfit.evaluate("runs/demo")  # doctest: +SKIP
    >>> r.mean.balanced_accuracy, r.heads["age"].n, r.to_json()["mean"]["accuracy"]  # doctest: +SKIP
    """

    heads: dict[str, HeadMetrics]  # in the schema's order
    mean: MeanMetrics
    instance: InstanceMetrics | None = None  # only for a table of binary attributes
    side: str | None = None  # "train" | "val" | "test"
    checkpoint: str | None = None  # the checkpoint scored (results.json: "best.pt")
    epoch: int | None = None  # its completed epochs
    tta: bool | None = None  # scored with mirror TTA
    best_epoch: int | None = None  # RUN_FIELDS: set by the training run's test scoring only
    monitor: str | None = None
    wall_time_s: float | None = None
    images_per_s: float | None = None
    decision: str | None = None  # the rule behind heads/mean/instance; None: the most probable class (older runs)
    rules: dict[str, RuleMetrics] | None = None  # every rule's numbers on the same rows
    calibration: Calibration | None = None

    def under(self, rule: str) -> Results:
        """These results with the numbers of ``rule`` (from :attr:`rules`) in heads, mean and instance.

        >>> r.under("most-probable").mean.accuracy  # doctest: +SKIP
        """
        if not self.rules or rule not in self.rules:
            raise AttrfitError(f"these results hold no numbers for the decision rule '{rule}'"
                               + (f" (they have {', '.join(self.rules)})" if self.rules else ""))
        m = self.rules[rule]
        return dataclasses.replace(self, heads=m.heads, mean=m.mean, instance=m.instance, decision=rule)

    def columns(self, prefix: str, mean_fields: tuple[str, ...] = HeadMetrics.LOGGED) -> dict[str, float]:
        """Flat columns: ``<prefix>_<field>_<head>`` per head (HeadMetrics.LOGGED), then ``<prefix>_mean_<field>``.

        With ``prefix`` "val" these are metrics.csv's val columns, in its order.
        """
        out = {f"{prefix}_{k}_{h}": getattr(m, k) for h, m in self.heads.items() for k in HeadMetrics.LOGGED}
        out.update((f"{prefix}_mean_{k}", getattr(self.mean, k)) for k in mean_fields)
        return out

    def to_json(self) -> dict:
        """The JSON of results.json and ``evaluate --json`` (NaN -> null; unknown metadata left out)."""
        out = {"heads": {h: m.to_json() for h, m in self.heads.items()}, "mean": self.mean.to_json()}
        if self.instance is not None:
            out["instance"] = self.instance.to_json()
        for f in dataclasses.fields(self)[3:]:
            value = getattr(self, f.name)
            if f.name == "rules" and value is not None:
                value = {rule: m.to_json() for rule, m in value.items()}
            elif f.name == "calibration" and value is not None:
                value = value.to_json()
            if value is not None or (f.name in RUN_FIELDS and self.best_epoch is not None):
                out[f.name] = value
        return out

    @classmethod
    def from_json(cls, d: dict, where: str = "results") -> Results:
        """Read :meth:`to_json`'s JSON back (older files: metrics they lack are NaN)."""
        try:
            instance = InstanceMetrics.from_json(d["instance"]) if d.get("instance") else None
            meta = {f.name: d.get(f.name) for f in dataclasses.fields(cls)[3:] if f.name not in SECTIONS}
            rules = {r: RuleMetrics.from_json(m) for r, m in d["rules"].items()} if d.get("rules") else None
            calibration = Calibration.from_json(d["calibration"]) if d.get("calibration") else None
            return cls({h: HeadMetrics.from_json(m) for h, m in d["heads"].items()},
                       MeanMetrics.from_json(d.get("mean") or {}), instance, **meta, rules=rules,
                       calibration=calibration)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise AttrfitError(f"{where}: not the per-head results attrfit writes ({type(e).__name__}: {e}); "
                               "make them again with 'attrfit evaluate'") from None

    @classmethod
    def read(cls, path) -> Results | None:
        """``RUN/results.json`` (or another file :meth:`to_json` wrote), typed; None where there is none yet
        (a run that never finished)."""
        from pathlib import Path

        from attrfit.core.runs import read_json

        path = Path(path)
        return cls.from_json(read_json(path), str(path)) if path.is_file() else None
