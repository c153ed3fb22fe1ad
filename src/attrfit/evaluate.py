"""Inference over a side of the split and the per-head metrics that cannot fool you.

Every accuracy is reported beside the balanced accuracy (mean per-class recall), the
accuracy of always predicting the train side's majority class, and the number of
labelled samples. Results have one shape everywhere (``results.json``, ``evaluate
--json``, the report)::

    {"heads": {HEAD: {"accuracy", "balanced_accuracy", "majority_accuracy", "macro_f1", "n", ...}},
     "mean": {"accuracy", "balanced_accuracy", "majority_accuracy", "macro_f1"},
     "instance": {"mA", "accuracy", "precision", "recall", "f1", "n_images", "n_attributes"}}

``instance`` is present only for a table of binary attributes (every head's classes are '0' and '1').
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from attrfit.metrics import head_metrics, instance_metrics, majority_classes, mean_accuracy_ma, summarize
from attrfit.precision import autocast, guard_bf16, inference_batches, resolve_device, resolve_precision
from attrfit.table import Schema


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
    probs: list[np.ndarray], labels: np.ndarray, schema: Schema, majority: list[int]
) -> dict:
    """Per-head metrics of the argmax predictions against ``labels`` (N x H, -1 missing)."""
    heads = {}
    for j, h in enumerate(schema.heads):
        pred = probs[j].argmax(1)
        heads[h] = head_metrics(pred, labels[:, j], len(schema.classes[h]), majority[j])
    out = {"heads": heads, "mean": summarize(heads)}
    binary = binary_table(schema)
    if binary is not None:
        pred = np.stack([probs[j].argmax(1) for j in range(len(schema.heads))], 1)
        out["instance"] = attribute_metrics(pred, labels, binary)
    return out


BINARY_CLASSES = ("0", "1")  # a head whose classes are exactly these is a binary attribute (1 = present)


def binary_table(schema: Schema) -> list[int] | None:
    """For a table of binary attributes (every head has classes '0' and '1', two heads or more):
    each head's index of class '1'; else None.

    >>> binary_table(Schema(("hat", "bag"), {"hat": ("0", "1"), "bag": ("0", "1")}))
    [1, 1]
    """
    if len(schema.heads) < 2 or any(schema.classes[h] != BINARY_CLASSES for h in schema.heads):
        return None
    return [schema.classes[h].index("1") for h in schema.heads]


def attribute_metrics(pred: np.ndarray, labels: np.ndarray, positive: list[int]) -> dict:
    """The pedestrian-attribute field's metrics (mA, instance accuracy/precision/recall/F1) of N x H class
    indices, ``positive`` giving each head's index of class '1' (see attrfit.metrics)."""
    pos = np.asarray(positive)
    p = (pred == pos).astype(np.int64)
    t = np.where(labels < 0, -1, (labels == pos).astype(np.int64))
    return {"mA": mean_accuracy_ma(p, t), **instance_metrics(p, t), "n_images": int(len(t)),
            "n_attributes": int(t.shape[1])}


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
) -> tuple[dict, list[np.ndarray]]:
    """Metrics (and the probabilities) of ``model`` on ``images``; the majority class comes from ``train_labels``."""
    probs = predict_probs(model, images, device, precision, batch_size, tta)
    majority = majority_classes(train_labels.numpy())
    return score(probs, labels.numpy(), schema, majority), probs


def format_table(results: dict, title: str = "") -> str:
    """A plain-text table: per head accuracy, balanced accuracy, majority accuracy, gain, n; then the means."""
    rows = [f"{'head':<16} {'acc':>7} {'bal_acc':>7} {'majority':>8} {'gain':>7} {'n':>6}"]
    for h, m in results["heads"].items():
        gain = m["accuracy"] - m["majority_accuracy"]
        flag = "  <- collapsed to one class" if m.get("pred_top_share", 0) >= 0.95 else ""
        rows.append(
            f"{h:<16} {m['accuracy']:7.3f} {m['balanced_accuracy']:7.3f} {m['majority_accuracy']:8.3f} "
            f"{gain:+7.3f} {m['n']:6d}{flag}"
        )
    mean = results["mean"]
    gain = mean["accuracy"] - mean["majority_accuracy"]
    rows.append(
        f"{'MEAN':<16} {mean['accuracy']:7.3f} {mean['balanced_accuracy']:7.3f} {mean['majority_accuracy']:8.3f} {gain:+7.3f}"
    )
    if results.get("instance"):
        rows.append(format_instance(results["instance"]))
    return (title + "\n" if title else "") + "\n".join(rows)


def format_instance(m: dict) -> str:
    """One line of the binary-attribute metrics (mA and the instance-based ones)."""
    return (f"binary attributes ({m['n_attributes']}): mA {m['mA']:.3f}; instance-based accuracy "
            f"{m['accuracy']:.3f}, precision {m['precision']:.3f}, recall {m['recall']:.3f}, F1 {m['f1']:.3f}")


def json_ready(results: dict) -> dict:
    """Plain floats/ints (NaN -> None) for json.dump."""
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

    results: dict  # {"heads", "mean", "side", "checkpoint", "epoch"}
    probs: list[np.ndarray]  # per head N x K_h
    labels: np.ndarray  # N x H, -1 missing
    paths: list[str]  # image_path per row
    schema: Schema
    checkpoint: dict
    images: Tensor | None = None  # uint8 N x 3 x H x W of the rows (thumbnails of the report's mistakes)


def score_checkpoint(ckpt_or_run: str, side: str = "test", tta: bool = False, csv: str | None = None,
                     progress: bool = True, device: str = "auto") -> Scored:
    """Load a checkpoint and its run's data (split verified against the table) and score one side.

    >>> score_checkpoint("runs/demo", side="test").results["mean"]["accuracy"]  # doctest: +SKIP
    """
    import dataclasses

    from attrfit import checkpoint, runs
    from attrfit.config import from_dict
    from attrfit.dataset import load_data, saved_run_config
    from attrfit.errors import AttrfitError
    from attrfit.split import same_split
    from attrfit.train import model_from_checkpoint

    path = checkpoint.resolve(ckpt_or_run)
    ckpt = checkpoint.load(path)
    cfg = from_dict(ckpt["config"])
    data_cfg = saved_run_config(dataclasses.replace(cfg.data, csv=csv) if csv else cfg.data, path.parent)
    if not csv:
        runs.check_recorded_paths(data_cfg, path, "or (attrfit evaluate) give its new place with --csv NEW.csv")
    schema = Schema.from_dict(ckpt["schema"])
    data = load_data(data_cfg, schema=schema, progress=progress, create_split=False)
    if "split" in ckpt and not same_split(ckpt["split"], data.split):
        raise AttrfitError(f"{data.split_path} is not the split {path} was trained with (the table or the "
                           "assignment to sides changed); evaluate with the original split file")
    dev = resolve_device(device)
    model = model_from_checkpoint(ckpt).to(dev).to(memory_format=torch.channels_last)
    rows = data.sides[side]
    precision = inference_precision(ckpt, dev)
    guard_bf16(model, precision, dev, tuple(data.images.shape[2:]), None, inference_batches(len(rows), cfg.eval_batch_size))
    results, probs = evaluate_images(model, data.images[rows], data.labels[rows], data.labels[data.sides["train"]],
                                     schema, dev, precision, cfg.eval_batch_size, tta)
    results = {**results, "side": side, "checkpoint": str(path), "epoch": ckpt["progress"]["epoch"]}
    paths = [data.image_paths[int(r)] for r in rows]
    return Scored(results, probs, data.labels[rows].numpy(), paths, schema, ckpt, data.images[rows])


def evaluate_checkpoint(ckpt_or_run: str, side: str = "test", tta: bool = False, csv: str | None = None,
                        progress: bool = True, device: str = "auto") -> dict:
    """Metrics of a checkpoint on one side of its split (see :func:`score_checkpoint`)."""
    return score_checkpoint(ckpt_or_run, side, tta, csv, progress, device).results


def inference_precision(ckpt: dict, device: torch.device) -> str:
    """The precision the run trained (and validated) with, where this device supports it."""
    trained = ckpt.get("precision", "fp32")
    return "fp32" if trained == "fp16" and device.type == "cpu" else resolve_precision(trained, device)
