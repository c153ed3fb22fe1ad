"""Inference over a side of the split and the per-head metrics that cannot fool you.

Every accuracy is reported beside the balanced accuracy (mean per-class recall), the
accuracy of always predicting the train side's majority class, and the number of
labelled samples. Results have one shape everywhere (``results.json``, ``evaluate
--json``, the report): :class:`attrfit.evaluation.results.Results`, whose ``instance`` is
set only for a table of binary attributes (every head's classes are '0' and '1').
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from attrfit.core import arguments
from attrfit.evaluation.calibration import scaled
from attrfit.evaluation.decisions import (BINARY_CLASSES, MOST_PROBABLE, RULES, Decide, Decisions, check_rule,
                                          most_probable)
from attrfit.evaluation.metrics import (head_metrics, instance_metrics, is_collapsed, majority_classes, mean_accuracy_ma,
                             summarize)
from attrfit.evaluation.results import InstanceMetrics, Results
from attrfit.model.checkpoint import Checkpoint
from attrfit.model.precision import autocast, guard_bf16, inference_batches, resolve_device, resolve_precision
from attrfit.data.split import SIDES
from attrfit.data.schema import Schema


@torch.no_grad()
def predict_probs(
    model: nn.Module,
    images: Tensor,
    device: torch.device,
    precision: str = "fp32",
    batch_size: int = 512,
    tta: bool = False,
    channels_last: bool = True,
) -> list[np.ndarray]:
    """Softmax probabilities per head, each ``N x K_h`` float32, for uint8 ``images`` N x 3 x H x W.

    With ``tta`` the probabilities of the image and its mirror are averaged.
    """
    was_training = model.training
    model.eval()
    chunks: list[list[Tensor]] = []
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device, non_blocking=True).contiguous(memory_format=fmt)
        with autocast(device, precision):
            probs = [p.float().softmax(1) for p in model(x)]
            if tta:
                flipped = model(x.flip(3))
                probs = [(p + q.float().softmax(1)) / 2 for p, q in zip(probs, flipped)]
        chunks.append([p.cpu() for p in probs])
    model.train(was_training)
    if not chunks:
        return [np.zeros((0, k), np.float32) for k in getattr(model, "num_classes", [])]
    return [torch.cat([c[h] for c in chunks]).numpy() for h in range(len(chunks[0]))]


def score(
    probs: list[np.ndarray], labels: np.ndarray, schema: Schema, majority: list[int], decide: Decide = most_probable
) -> Results:
    """Per-head metrics of the predictions of ``decide`` (the most probable class by default) against ``labels``
    (N x H, -1 missing)."""
    pred = [np.asarray(decide(h, probs[j])) for j, h in enumerate(schema.heads)]
    heads = {h: head_metrics(pred[j], labels[:, j], len(schema.classes[h]), majority[j])
             for j, h in enumerate(schema.heads)}
    binary = binary_table(schema)
    instance = attribute_metrics(np.stack(pred, 1), labels, binary) if binary is not None else None
    return Results(heads, summarize(heads), instance)




def binary_table(schema: Schema) -> list[int] | None:
    """For a table of binary attributes (every head has classes '0' and '1', two heads or more):
    each head's index of class '1'; else None.

    >>> binary_table(Schema(("hat", "bag"), {"hat": ("0", "1"), "bag": ("0", "1")}))
    [1, 1]
    """
    if len(schema.heads) < 2 or any(schema.classes[h] != BINARY_CLASSES for h in schema.heads):
        return None
    return [schema.classes[h].index("1") for h in schema.heads]


def attribute_metrics(pred: np.ndarray, labels: np.ndarray, positive: list[int]) -> InstanceMetrics:
    """The pedestrian-attribute field's metrics (mA, instance accuracy/precision/recall/F1) of N x H class
    indices, ``positive`` giving each head's index of class '1' (see attrfit.evaluation.metrics)."""
    pos = np.asarray(positive)
    p = (pred == pos).astype(np.int64)
    t = np.where(labels < 0, -1, (labels == pos).astype(np.int64))
    return InstanceMetrics(mean_accuracy_ma(p, t), **instance_metrics(p, t), n_images=int(len(t)),
                           n_attributes=int(t.shape[1]))


def evaluate_images(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    train_labels: Tensor,
    schema: Schema,
    device: torch.device,
    precision: str = "fp32",
    batch_size: int = 512,
    tta: bool = False,
    decide: Decide = most_probable,
) -> tuple[Results, list[np.ndarray]]:
    """Metrics of the labels ``decide`` gives (and the probabilities) of ``model`` on ``images``; the majority class
    comes from ``train_labels``."""
    probs = predict_probs(model, images, device, precision, batch_size, tta)
    majority = majority_classes(train_labels.cpu().numpy())  # .cpu(): the loop may keep its sides on the GPU
    return score(probs, labels.cpu().numpy(), schema, majority, decide), probs


NO_LABELS = "n/a"  # a head with no labelled rows on the side: no score, n = 0, left out of the means


def _cell(value, width: int, spec: str = ".3f") -> str:
    """``value`` right-aligned in ``width`` (``spec`` like '.3f' or '+.3f'), or 'n/a' for None (results.json) and NaN."""
    if value is None or not math.isfinite(value):
        return f"{NO_LABELS:>{width}}"
    return f"{value:{spec[0] if spec[0] == '+' else ''}{width}{spec.lstrip('+')}}"


def format_table(results: Results, title: str = "") -> str:
    """A plain-text table: per head accuracy, balanced accuracy, majority accuracy, gain, n; then the means.

    A head without labelled rows on the side shows 'n/a' and n = 0 and is left out of the means (said below).

    Example:
        >>> from attrfit.evaluation.results import HeadMetrics, MeanMetrics
        >>> r = Results({"a": HeadMetrics(0.9, 0.8, 0.8, 0.5, 10, 0.5), "b": HeadMetrics.empty()},
        ...             MeanMetrics(0.9, 0.8, 0.5, 0.8))
        >>> print(format_table(r).splitlines()[2])
        b                    n/a     n/a      n/a     n/a      0  <- no labelled rows on this side
    """
    rows = [f"{'head':<16} {'acc':>7} {'bal_acc':>7} {'majority':>8} {'gain':>7} {'n':>6}"]
    empty = []
    for h, m in results.heads.items():
        if not m.n:
            empty.append(h)
        flag = ("  <- no labelled rows on this side" if not m.n else
                "  <- collapsed to one class" if is_collapsed(m.pred_top_share, m.n) else "")
        rows.append(f"{h:<16} {_cell(m.accuracy, 7)} {_cell(m.balanced_accuracy, 7)} "
                    f"{_cell(m.majority_accuracy, 8)} {_cell(m.gain, 7, '+.3f')} {m.n:6d}{flag}")
    mean = results.mean
    rows.append(f"{'MEAN':<16} {_cell(mean.accuracy, 7)} {_cell(mean.balanced_accuracy, 7)} "
                f"{_cell(mean.majority_accuracy, 8)} {_cell(mean.gain, 7, '+.3f')}")
    if empty and len(empty) == len(results.heads):
        rows.append(f"{NO_LABELS}: no head has a labelled row on this side (is it empty?), so there is nothing to score")
    elif empty:
        rows.append(f"{NO_LABELS}: {', '.join(empty)} had no labelled rows on this side, so no score; "
                    "the means are over the other heads")
    if results.instance is not None:
        rows.append(format_instance(results.instance))
    return (title + "\n" if title else "") + "\n".join(rows)


def format_instance(m: InstanceMetrics) -> str:
    """One line of the binary-attribute metrics (mA and the instance-based ones)."""
    return (f"binary attributes ({m.n_attributes}): mA {m.mA:.3f}; instance-based accuracy "
            f"{m.accuracy:.3f}, precision {m.precision:.3f}, recall {m.recall:.3f}, F1 {m.f1:.3f}")


def json_ready(results: dict) -> dict:
    """Plain floats/ints (NaN -> None) for json.dump (of a dict; :meth:`Results.to_json` for results)."""
    def conv(v):
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, (np.floating, float)):
            return None if np.isnan(v) else float(v)
        if isinstance(v, (np.integer,)):
            return int(v)
        return v

    return conv(results)


@dataclass
class Scored:
    """A checkpoint scored on one side: metrics plus what they were computed from."""

    results: Results  # with side, checkpoint and epoch set
    probs: list[np.ndarray]  # per head N x K_h (temperature-scaled where the run has decisions)
    labels: np.ndarray  # N x H, -1 missing
    paths: list[str]  # image_path per row
    schema: Schema
    checkpoint: Checkpoint
    images: Tensor | None = None  # uint8 N x 3 x H x W of the rows (thumbnails of the report's mistakes)
    raw_probs: list[np.ndarray] | None = None  # the model's own softmax (temperature 1); None: probs are
    pred: list[np.ndarray] | None = None  # per head N class indices by the rule; None: the most probable
    decisions: Decisions | None = None
    rule: str = MOST_PROBABLE

    def predicted(self, j: int) -> np.ndarray:
        """Head ``j``'s class per row, by the rule the results were scored with."""
        return self.probs[j].argmax(1) if self.pred is None else self.pred[j]


@dataclass
class Judged:
    """One side's numbers under a rule (:func:`judge`), and what made them."""

    results: Results
    probs: list[np.ndarray]
    raw_probs: list[np.ndarray]
    pred: list[np.ndarray]


def judge(raw: list[np.ndarray], labels: np.ndarray, majority: list[int], schema: Schema,
          decisions: Decisions | None, rule: str = MOST_PROBABLE) -> Judged:
    """Score the model's probabilities ``raw`` (per head N x K) under ``rule``; with ``decisions``, they are
    temperature-scaled first and the results also hold every rule's numbers and the calibration.

    Without decisions (a run made before they were saved) the results are the most probable class's,
    exactly as they always were, and no rule but that one applies.
    """
    from attrfit.evaluation.calibration import calibration_of
    from attrfit.evaluation.results import RuleMetrics

    if decisions is None:
        check_rule(rule, (MOST_PROBABLE,))
        return Judged(score(raw, labels, schema, majority), raw, raw, [p.argmax(1) for p in raw])
    check_rule(rule, decisions.rules())
    probs = [scaled(p, t) for p, t in zip(raw, decisions.temperatures())]
    rules = {}
    for r in decisions.rules():
        m = score(probs, labels, schema, majority, decisions.decide(r))
        rules[r] = RuleMetrics(m.heads, m.mean, m.instance)
    results = Results(rules[rule].heads, rules[rule].mean, rules[rule].instance, decision=rule, rules=rules,
                      calibration=calibration_of(raw, probs, labels, schema, decisions.temperatures()))
    decide = decisions.decide(rule)
    return Judged(results, probs, raw, [np.asarray(decide(h, probs[j])) for j, h in enumerate(schema.heads)])


def score_checkpoint(ckpt_or_run: str, side: str = "test", tta: bool | None = None, csv: str | None = None,
                     progress: bool = True, device: str = "auto", decide: str | None = None) -> Scored:
    """Load a checkpoint and its run's data (split verified against the table) and score one side.

    ``tta`` None means what the run validated with (:func:`run_tta`); the results say which (``tta``).
    ``decide`` names the decision rule (None: the run's own, from its --objective; the most probable class
    for a run without decisions.json, whose other rules are then fitted on its val side for this scoring).

    >>> score_checkpoint("runs/demo", side="test").results.mean.accuracy  # doctest: +SKIP
    """
    import dataclasses

    from attrfit.model import checkpoint

    from attrfit.core import runs
    from attrfit.recipe.config import from_dict
    from attrfit.data.load import load_data, saved_run_config
    from attrfit.core.errors import AttrfitError
    from attrfit.data.split import same_split
    from attrfit.model.checkpoint import model_from_checkpoint

    side = arguments.choice(side, SIDES, "side")
    tta = arguments.flag(tta, "tta", optional=True)
    csv = None if csv is None else str(arguments.path(csv, "csv"))
    decide = None if decide is None else check_rule(arguments.choice(decide, RULES, "decide"))
    path = checkpoint.resolve(ckpt_or_run)
    ckpt = Checkpoint.load(path)
    cfg = from_dict(ckpt.config)
    data_cfg = saved_run_config(dataclasses.replace(cfg.data, csv=csv) if csv else cfg.data, path.parent)
    if not csv:
        runs.check_recorded_paths(data_cfg, path, "or (attrfit evaluate) give its new place with --csv NEW.csv")
    schema = ckpt.schema
    data = load_data(data_cfg, schema=schema, progress=progress, create_split=False)
    if ckpt.split is not None and not same_split(ckpt.split, data.split):
        raise AttrfitError(f"{data.split_path} is not the split {path} was trained with (the table or the "
                           "assignment to sides changed); evaluate with the original split file")
    dev = resolve_device(device)
    model = model_from_checkpoint(ckpt).to(dev).to(memory_format=torch.channels_last)
    rows = data.sides[side]
    precision = inference_precision(ckpt, dev)
    tta = run_tta(ckpt) if tta is None else tta
    guard_bf16(model, precision, dev, tuple(data.images.shape[2:]), None, inference_batches(len(rows), cfg.eval_batch_size))
    train_labels = data.labels[data.sides["train"]]  # the majority baseline's
    results, probs = evaluate_images(model, data.images[rows], data.labels[rows], train_labels, schema, dev, precision,
                                     cfg.eval_batch_size, tta)
    decisions = Decisions.for_checkpoint(path, ckpt)
    if decisions is None and decide not in (None, MOST_PROBABLE):
        val = predict_probs(model, data.images[data.sides["val"]], dev, precision, cfg.eval_batch_size, tta)
        decisions = fit_now(val, data, ckpt, path, cfg.objective, tta)
    judged = Judged(results, probs, probs, [p.argmax(1) for p in probs])
    if decisions is not None:
        judged = judge(probs, data.labels[rows].numpy(), majority_classes(train_labels.numpy()), schema, decisions,
                       decide or decisions.rule)
    results = dataclasses.replace(judged.results, side=side, checkpoint=str(path), epoch=ckpt.progress.epoch, tta=tta)
    paths = [data.image_paths[int(r)] for r in rows]
    return Scored(results, judged.probs, data.labels[rows].numpy(), paths, schema, ckpt, data.images[rows],
                  judged.raw_probs, judged.pred, decisions, results.decision or MOST_PROBABLE)


def fit_now(val_probs: list[np.ndarray], data, ckpt: Checkpoint, path, objective: str, tta: bool) -> Decisions:
    """Decisions for a checkpoint that has none saved, fitted on its val side's probabilities ``val_probs`` for this
    scoring only (not saved)."""
    import logging

    from attrfit.evaluation.decision_fit import fit_decisions
    from attrfit.evaluation.decisions import CheckpointRef

    val, train = data.sides["val"], data.sides["train"]
    logging.getLogger(__name__).info("%s has no decisions.json: fitting the decision rules on its val side "
                                     "(%d images) for this scoring; nothing is saved", path, len(val))
    return fit_decisions(val_probs, data.labels[val].numpy(), data.labels[train].numpy(), ckpt.schema, objective,
                         CheckpointRef(path.name, ckpt.progress.epoch, ckpt.progress.step), tta)


def evaluate_checkpoint(ckpt_or_run: str, side: str = "test", tta: bool | None = None, csv: str | None = None,
                        progress: bool = True, device: str = "auto", decide: str | None = None) -> Results:
    """Metrics of a checkpoint on one side of its split (see :func:`score_checkpoint`)."""
    return score_checkpoint(ckpt_or_run, side, tta, csv, progress, device, decide).results


def run_tta(ckpt: Checkpoint) -> bool:
    """Whether the run of ``ckpt`` validated with mirror TTA (its --tta); checkpoints from before the option: no."""
    return bool(ckpt.config.get("tta", False))


def inference_precision(ckpt: Checkpoint, device: torch.device) -> str:
    """The precision the run trained (and validated) with, where this device supports it."""
    trained = ckpt.precision
    return "fp32" if trained == "fp16" and device.type == "cpu" else resolve_precision(trained, device)
