"""The label audit: rows of the train and val sides whose given label is probably wrong.

Confident learning (Northcutt, Jiang & Chuang, "Confident learning: estimating uncertainty
in dataset labels", JAIR 2021), as implemented by cleanlab:

1. Out-of-sample probabilities for every audited row by k-fold cross-fitting: the train
   and val rows are dealt into k folds (whole groups, e.g. a person, in one fold), and each
   fold is predicted by a model trained for a fixed number of epochs on the other k-1 folds
   (its final weights: picking an epoch on the held-out fold would fit its labels).
2. Per head, the out-of-fold probabilities are temperature-scaled (one temperature per head,
   fitted by log-likelihood on those probabilities against the given labels), and the head is
   judged only where its out-of-fold model beats chance: the lower end of the 95% bootstrap
   interval of its balanced accuracy is above 1/K, K the classes labelled (:class:`HeadTrust`).
   Confident learning assumes probabilities that are calibrated and better than chance; a head
   whose model has learned nothing would otherwise "find" its own mistakes.
3. For a judged head, cleanlab estimates from those probabilities and the given labels how many
   labels are wrong (the confident joint), and the suspects are that many rows with the
   lowest self-confidence, the probability the model gives the given label (lower = more
   suspect); the suggested label is the most probable class.

The test side is never read: its rows are not audited and no fold trains on them, so the
held-out scores of later runs stay honest. The user's CSV is never changed; the result is
a CSV of suspects and an HTML gallery to review them (:mod:`attrfit.training.audit_outputs`).

Example:
    >>> audit = audit_labels(TrainConfig(data=DataConfig(csv="labels.csv"), epochs=8), folds=4)  # doctest: +SKIP
    >>> [h for h, t in audit.trust.items() if not t.can_judge]  # heads it cannot judge  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from attrfit.core.errors import AttrfitError
from attrfit.data.schema import Schema
from attrfit.evaluation.bootstrap import ALPHA, N_BOOT
from attrfit.evaluation.calibration import fit_temperature, log_probs, scaled
from attrfit.evaluation.metrics import bootstrap_ci, head_metrics, majority_classes
from attrfit.recipe.config import PLAIN_RECIPE

log = logging.getLogger(__name__)

AUDITED_SIDES = ("train", "val")  # never "test"


# ---------------------------------------------------------------- folds

def fold_ids(groups: list[str] | None, n: int, k: int, seed: int = 0) -> np.ndarray:
    """Fold (0..k-1) of each of ``n`` rows; rows of one group share a fold, folds are near equal in rows.

    Groups are shuffled by ``seed``, then each goes to the fold with the fewest rows so far.

    >>> np.bincount(fold_ids(None, 6, 3)).tolist()
    [2, 2, 2]
    >>> f = fold_ids(["a", "a", "b", "c", "c", "d"], 6, 2); bool(f[0] == f[1] and f[3] == f[4])
    True
    """
    keys = np.asarray(groups if groups is not None else np.arange(n))
    unique, inverse, sizes = np.unique(keys, return_inverse=True, return_counts=True)
    if k < 2 or k > len(unique):
        what = "groups" if groups is not None else "rows"
        raise AttrfitError(f"--folds {k}: needs 2 to {len(unique)} (the audited {what}); choose a k in that range")
    order = np.random.default_rng(seed).permutation(len(unique))
    fill = np.zeros(k, dtype=np.int64)
    fold_of_group = np.empty(len(unique), dtype=np.int64)
    for g in order:
        f = int(fill.argmin())
        fold_of_group[g] = f
        fill[f] += sizes[g]
    return fold_of_group[inverse]


# ---------------------------------------------------------------- cross-fitting

def train_fold(cfg, schema: Schema, images: Tensor, labels: Tensor, train_idx: np.ndarray, held_idx: np.ndarray,
               show: bool = False) -> list[np.ndarray]:
    """Train on ``train_idx`` for ``cfg.epochs`` (final weights) and return its probabilities on ``held_idx``."""
    from attrfit.training.distributed import Dist
    from attrfit.evaluation.scoring import predict_probs
    from attrfit.recipe.schedule import lr_at, momentum_at
    from attrfit.training.loop import eval_model
    from attrfit.training.trainer import Progress, StepMeter, build_trainer, epoch_order, steps_per_epoch, train_step
    from attrfit.training.sides import Sides

    tr, held = torch.from_numpy(train_idx), torch.from_numpy(held_idx)
    # the held-out images stand in as "val" only to size the bf16 check's inference batches: never scored
    sides = Sides(images[tr].contiguous(), labels[tr], images[held], labels[held])
    t = build_trainer(cfg, schema, sides, float(cfg.optim.lr), Dist())
    prog, bs = Progress(), cfg.batch_size
    for epoch in range(cfg.epochs):  # the steps of attrfit train's loop, without validation or checkpoints
        order = epoch_order(len(sides.train_images), cfg.seed, epoch)
        n_steps = steps_per_epoch(len(order), bs)
        meter = StepMeter(t, prog, n_steps, epoch, show)
        for i in range(n_steps):
            idx = order[i * bs : (i + 1) * bs]
            x, y = sides.train_images[idx].to(t.device), sides.train_labels[idx].to(t.device)
            lr = lr_at(prog.step, t.total_steps, t.max_lr, cfg.schedule)
            mom = momentum_at(prog.step, t.total_steps, cfg.schedule, cfg.optim.momentum)
            loss, per_head, correct = train_step(t, x, y, prog.step, lr, mom)
            prog.step += 1
            meter.add(loss, per_head, correct, y, last=i == n_steps - 1)
        meter.close()
        prog.sums = {}
    return predict_probs(eval_model(t), sides.val_images, t.device, t.precision, cfg.eval_batch_size,
                         tta=cfg.tta, channels_last=cfg.channels_last)


def crossfit(cfg, schema: Schema, images: Tensor, labels: Tensor, folds: np.ndarray,
             progress: bool = False) -> list[np.ndarray]:
    """Out-of-fold probabilities per head (N x K_h): row i is predicted by the model that did not train on fold[i]."""
    probs = [np.zeros((len(folds), k), np.float32) for k in schema.num_classes]
    k = int(folds.max()) + 1
    for f in range(k):
        t0 = time.perf_counter()
        held = np.flatnonzero(folds == f)
        out = train_fold(cfg, schema, images, labels, np.flatnonzero(folds != f), held, progress)
        for p, o in zip(probs, out):
            p[held] = o
        log.info("fold %d/%d: trained on %d rows, predicted %d in %.0f s", f + 1, k, len(folds) - len(held),
                 len(held), time.perf_counter() - t0)
    return probs


# ---------------------------------------------------------------- suspects (cleanlab)

@dataclass(frozen=True)
class Suspect:
    """A row whose given label of one head is probably wrong."""

    row: int  # index into the audited rows
    head: str
    given: str
    suggested: str  # the most probable class out of sample
    score: float  # cleanlab's self-confidence label quality: out-of-sample probability of the given label
    rank: int  # 1 = most suspect of its head


def require_cleanlab():
    """cleanlab's ``count`` and ``rank`` modules, or one clear error naming the extra to install."""
    try:
        import cleanlab.count
        import cleanlab.rank
    except ImportError:
        raise AttrfitError("audit-labels needs cleanlab, which is not installed; install it with "
                           "pip install 'attrfit[audit]' (or pip install 'cleanlab>=2.6,<3')") from None
    return cleanlab.count, cleanlab.rank


def head_suspects(probs: np.ndarray, target: np.ndarray) -> list[tuple[int, float, int]]:
    """``(row, score, suggested class)`` of one head's label issues, most suspect first (rows with -1 skipped).

    cleanlab estimates how many labels are wrong (``num_label_issues``: the off-diagonal of the
    confident joint) and the suspects are that many lowest self-confidences. On the demo's known
    flips this had a higher precision than ``find_label_issues``' default (prune by noise rate)
    on 15 of 16 head-runs, recall within 0.06 (docs/experiments/audit.md). A row whose most probable
    class is its given label is not a suspect: the model agrees with the label.
    """
    count, rank = require_cleanlab()
    rows = np.flatnonzero(target >= 0)
    if len(rows) == 0 or probs.shape[1] < 2:
        return []
    p = probs[rows].astype(np.float64)
    p /= p.sum(1, keepdims=True)  # cleanlab checks rows sum to 1; float32 softmax is off by ~1e-7
    y = target[rows]
    with warnings.catch_warnings():  # "too few examples in class k" for rare classes: the result stands
        warnings.simplefilter("ignore")
        n = int(count.num_label_issues(y, p))
        scores = rank.get_label_quality_scores(y, p, method="self_confidence")
    order = np.argsort(scores, kind="stable")[:n]
    return [(int(rows[i]), float(scores[i]), int(p[i].argmax())) for i in order if p[i].argmax() != y[i]]


def find_suspects(probs: list[np.ndarray], labels: np.ndarray, schema: Schema,
                  trust: dict[str, HeadTrust] | None = None) -> dict[str, list[Suspect]]:
    """Per head, the label issues cleanlab finds in out-of-sample ``probs`` against ``labels`` (N x H, -1 missing);
    none for a head whose ``trust`` says its model cannot judge it."""
    out = {}
    for j, h in enumerate(schema.heads):
        classes = schema.classes[h]
        if trust is not None and not trust[h].can_judge:
            out[h] = []
            continue
        out[h] = [Suspect(r, h, classes[labels[r, j]], classes[s], score, rank)
                  for rank, (r, score, s) in enumerate(head_suspects(probs[j], labels[:, j]), 1)]
    return out


# ---------------------------------------------------------------- can a head's model judge its labels?

@dataclass(frozen=True)
class HeadTrust:
    """A head's out-of-fold model against the given labels: whether it beats chance clearly enough to judge them."""

    n: int  # labelled audited rows
    accuracy: float
    majority_accuracy: float  # always answering the audited rows' most common class
    balanced_accuracy: float
    balanced_accuracy_ci: tuple[float, float]  # 95% percentile bootstrap (evaluation.bootstrap's policy)
    chance: float  # 1 / classes labelled: the balanced accuracy of any constant answer
    temperature: float  # fitted on the out-of-fold probabilities

    @property
    def can_judge(self) -> bool:
        """The rule: the lower end of the balanced accuracy's 95% interval is above chance."""
        return self.n > 0 and self.balanced_accuracy_ci[0] > self.chance


def head_trust(probs: np.ndarray, target: np.ndarray, temperature: float = 1.0, n_boot: int = N_BOOT,
               seed: int = 0) -> HeadTrust:
    """:class:`HeadTrust` of one head's out-of-fold probabilities (N x K) against its labels (-1 missing).

    >>> t = head_trust(np.tile([0.6, 0.4], (40, 1)), np.arange(40) % 2)  # one answer for every row: chance
    >>> t.balanced_accuracy, t.chance, t.can_judge
    (0.5, 0.5, False)
    """
    k = probs.shape[1]
    pred = probs.argmax(1)
    labelled = target[target >= 0]
    m = head_metrics(pred, target, k, majority_classes(target[:, None])[0])
    chance = 1.0 / max(1, len(np.unique(labelled)))
    ci = bootstrap_ci(pred, target, k, "balanced_accuracy", n_boot, ALPHA, seed)
    return HeadTrust(m.n, m.accuracy, m.majority_accuracy, m.balanced_accuracy, ci, chance, float(temperature))


def calibrated(probs: list[np.ndarray], labels: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
    """The out-of-fold probabilities temperature-scaled per head (fitted on them, against the given labels)."""
    temperatures = [fit_temperature(log_probs(p), labels[:, j]) for j, p in enumerate(probs)]
    return [scaled(p, t) for p, t in zip(probs, temperatures)], temperatures


# ---------------------------------------------------------------- the whole audit

@dataclass
class Audit:
    """Out-of-sample probabilities and the suspects of the audited (train and val) rows."""

    csv: Path
    schema: Schema
    paths: list[str]  # image_path per audited row
    sides: list[str]  # 'train' or 'val' per audited row
    labels: np.ndarray  # N x H given labels, -1 missing
    probs: list[np.ndarray]  # per head N x K_h, out of fold, temperature-scaled
    folds: np.ndarray  # N fold ids
    images: Tensor  # uint8 N x 3 x H x W, for the gallery
    suspects: dict[str, list[Suspect]]
    trust: dict[str, HeadTrust]  # per head: can its out-of-fold model judge the labels?


def audited_rows(data) -> tuple[np.ndarray, list[str]]:
    """Cache rows of the train and val sides (never test), and the side of each."""
    rows = [data.sides[s].numpy() for s in AUDITED_SIDES]
    sides = [s for s, r in zip(AUDITED_SIDES, rows) for _ in range(len(r))]
    return np.concatenate(rows).astype(np.int64), sides


def row_groups(data, rows: np.ndarray) -> list[str] | None:
    """The group (e.g. person) of each cache row in ``rows``, or None without a group column."""
    if data.table.groups is None:
        return None
    group_of_path = dict(zip(data.table.paths, data.table.groups))
    return [group_of_path[data.image_paths[int(r)]] for r in rows]


def check_config(cfg) -> None:
    from attrfit.recipe.config import validate

    validate(cfg)
    if isinstance(cfg.optim.lr, str):
        raise AttrfitError(f"audit-labels needs a number for --lr, not {cfg.optim.lr!r} (the range test is per run; "
                           "run 'attrfit lr-find' once and pass its suggestion)")


def audit_data(data, cfg, folds: int = 4, progress: bool = False) -> Audit:
    """Cross-fit on the train and val rows of loaded ``data`` (an :class:`attrfit.data.load.Data`) and find suspects."""
    check_config(cfg)
    rows, sides = audited_rows(data)
    if len(rows) == 0:
        raise AttrfitError(f"{data.split_path}: the train and val sides are empty; nothing to audit")
    fold = fold_ids(row_groups(data, rows), len(rows), folds, cfg.seed)
    idx = torch.from_numpy(rows)
    images, labels = data.images[idx], data.labels[idx]
    probs, temperatures = calibrated(crossfit(cfg, data.schema, images, labels, fold, progress), labels.numpy())
    trust = {h: head_trust(probs[j], labels[:, j].numpy(), temperatures[j]) for j, h in enumerate(data.schema.heads)}
    suspects = find_suspects(probs, labels.numpy(), data.schema, trust)
    paths = [data.image_paths[int(r)] for r in rows]
    return Audit(Path(data.table.csv_path), data.schema, paths, sides, labels.numpy(), probs, fold, images, suspects,
                 trust)


def audit_labels(cfg, folds: int = 4, progress: bool = False) -> Audit:
    """Load the data of ``cfg`` (a :class:`attrfit.recipe.config.TrainConfig`; the split is made once if absent) and audit it.

    >>> audit = audit_labels(TrainConfig(data=DataConfig(csv="labels.csv")), folds=4)  # doctest: +SKIP
    >>> audit.suspects["gender"][0].suggested  # doctest: +SKIP
    'female'
    """
    from attrfit.data.load import load_data

    check_config(cfg)
    require_cleanlab()  # before the work, not after k trainings
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    data = load_data(cfg.data, progress=progress)
    return audit_data(data, cfg, folds, progress)


# Each fold trains the plain recipe (plain cross-entropy, the trained weights themselves): on a table of a
# few thousand rows the default recipe's class weights, mixup and weight averaging learn too little in a few
# epochs for the out-of-fold model to beat chance (docs/experiments/audit.md). 16 epochs at LR 0.4.
AUDIT_DEFAULTS = {**PLAIN_RECIPE, "epochs": 16, "lr": 0.4}
