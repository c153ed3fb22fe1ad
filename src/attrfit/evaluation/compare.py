"""Compare runs honestly: the same test images, paired bootstrap differences, plain verdicts.

``attrfit compare RUN_A RUN_B [RUN_C ...]`` scores each run's best checkpoint on the test
side (:func:`attrfit.evaluation.scoring.score_checkpoint`) and, per head and for the means, shows
accuracy and balanced accuracy of every run, each run's difference to the first with a
paired bootstrap 95% interval, and a verdict: better, worse, or no detectable difference.

Paired: every bootstrap resample draws one set of test images (with replacement) and
scores every run on those same images, so what the runs have in common (easy and hard
images) cancels and only their disagreements count. That is why runs on different test
images are refused: they cannot be paired. Every run is scored under the same decision rule
(``--decide``; by default run A's own), each with its own fitted temperatures, strength and
thresholds (:mod:`attrfit.evaluation.decisions`), so the runs are paired on the same question.

Verdicts come from two-sided bootstrap p-values (twice the smaller share of resampled
differences on either side of 0). Per-head verdicts are Holm-corrected over the heads
(per metric and per pair of runs), so testing eight heads does not find a "difference" by
chance one time in two; each summary row (the means, and the binary-attribute metrics) is
one test of its own, uncorrected. The 95% intervals shown are per row, not simultaneous.

The terminal table and the HTML page are :mod:`attrfit.evaluation.compare_page`'s.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from attrfit.core.errors import AttrfitError
from attrfit.data.split import SplitRef
from attrfit.evaluation.bootstrap import ALPHA, N_BOOT, bootstrap_p, head_scores, holm, resample_indices, verdict
from attrfit.evaluation.results import Results
from attrfit.model import checkpoint

log = logging.getLogger(__name__)

METRICS = ("accuracy", "balanced_accuracy")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# ---------------------------------------------------------------- what is compared

@dataclass
class Diff:
    """One run minus the first on one row: the difference, its 95% interval, p-values and the verdict."""

    value: float
    ci: tuple[float, float]
    p: float
    p_holm: float | None  # Holm-adjusted over the heads; None for summary rows (one test each)
    verdict: str


@dataclass
class Row:
    """One metric of one head (or a summary such as the mean over heads), for every run."""

    name: str  # head, or "MEAN", or an instance-based metric
    metric: str
    values: list[float]
    diffs: list[Diff | None]  # per run; None for the first (the baseline)
    summary: bool = False


@dataclass
class RunInfo:
    label: str
    path: str
    checkpoint: str  # the file scored: best.pt, or the one named (last.pt, a copy...)
    epoch: int | None  # the epoch of the weights scored
    best_epoch: int | None
    epochs_done: int | None
    epochs: int | None
    wall_s: float | None
    images_per_s: float | None
    max_lr: float | None
    precision: str | None


@dataclass
class Comparison:
    runs: list[RunInfo]
    n_images: int
    assignment: str
    heads: list[str]
    config_diff: list[tuple[str, list]]  # (key, value per run) where the runs differ
    rows: list[Row]
    n_boot: int
    alpha: float
    curves: list[list[dict]] = field(default_factory=list)  # metrics.csv rows per run (for figures)
    rule: str = "most-probable"  # the decision rule every run was scored under

    def to_dict(self) -> dict:
        from attrfit.evaluation.scoring import json_ready

        d = dataclasses.asdict(self)
        d.pop("curves")
        d["config_diff"] = [{"key": k, "values": v} for k, v in self.config_diff]
        d["method"] = method_text(self)
        return json_ready(d)


# ---------------------------------------------------------------- loading runs

@dataclass
class Loaded:
    run: Path
    scored: object  # attrfit.evaluation.scoring.Scored on the test side
    metrics: list[dict]
    results: Results | None  # results.json
    environment: dict | None


def split_of(run: Path) -> SplitRef | None:
    """The split a run's best checkpoint recorded (fingerprint, assignment digest)."""
    return checkpoint.Checkpoint.load(checkpoint.resolve(run)).split


def check_same_test_images(runs: list[Path]) -> str:
    """The shared split assignment digest, or a clear refusal naming the runs that differ."""
    splits = [split_of(r) for r in runs]
    digests = [s.assignment if s is not None else None for s in splits]
    if None in digests:
        old = runs[digests.index(None)]
        raise AttrfitError(f"{old}: its checkpoint does not record which images were on which side, so its test "
                           "images cannot be matched to the other runs'; retrain it with this attrfit")
    if len(set(digests)) > 1:
        lines = ", ".join(f"{r} ({d[:8]}, split {s.path})" for r, d, s in zip(runs, digests, splits))
        raise AttrfitError(f"the runs were trained on different splits (assignment digests: {lines}), so they were "
                           "tested on different images and cannot be compared image by image. Compare only runs "
                           "made with the same split file (train them with --split FILE on the same CSV)")
    return digests[0]


def load_run(target: Path, progress: bool, decide: str | None = None) -> Loaded:
    """A run folder (its best.pt) or a checkpoint file, scored on the test side under the rule ``decide`` (None:
    the run's own), with its run's records."""
    from attrfit.core import runs
    from attrfit.evaluation.scoring import score_checkpoint

    path = checkpoint.resolve(target)
    run = path.parent
    scored = score_checkpoint(str(path), side="test", progress=progress, decide=decide)
    env = run / "environment.json"
    results = Results.read(run / "results.json") if path.name == "best.pt" else None  # results.json is best.pt's
    return Loaded(run, scored, runs.MetricsLog(run / "metrics.csv").rows(), results,
                  runs.read_json(env) if env.is_file() else None)


def check_same_rows(loaded: list[Loaded]) -> None:
    first = loaded[0].scored
    for other in loaded[1:]:
        s = other.scored
        if s.schema != first.schema:
            raise AttrfitError(f"{other.run} has other heads or classes than {loaded[0].run} "
                               f"({'; '.join(s.schema.differences(first.schema))}); only runs on the same table "
                               "can be compared")
        if s.paths != first.paths or not np.array_equal(s.labels, first.labels):
            raise AttrfitError(f"{other.run} and {loaded[0].run} scored different test rows although their "
                               "splits match; check that both read the same CSV")


def run_info(label: str, x: Loaded) -> RunInfo:
    ckpt, res = x.scored.checkpoint, x.results
    prog, cfg = ckpt.progress, ckpt.config
    rates = [float(r["images_per_s"]) for r in x.metrics if r.get("images_per_s")]
    wall = res.wall_time_s if res is not None and res.wall_time_s is not None else prog.wall_time
    rate = res.images_per_s if res is not None else None
    if rate is None and rates:
        rate = float(np.median(rates))
    return RunInfo(label, str(x.run), Path(x.scored.results.checkpoint).name, prog.epoch,
                   prog.best_epoch, len(x.metrics) or prog.epoch, cfg.get("epochs"), wall, rate, ckpt.max_lr,
                   ckpt.precision)


def config_diff(loaded: list[Loaded]) -> list[tuple[str, list]]:
    """Settings whose values differ between the runs (resolved max LR and precision included)."""
    from attrfit.recipe.config import flatten

    flat = []
    for x in loaded:
        ckpt = x.scored.checkpoint
        f = {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in flatten(ckpt.config).items()}
        f["max_lr (resolved)"] = ckpt.max_lr
        f["precision (used)"] = ckpt.precision
        flat.append(f)
    keys = list(dict.fromkeys(k for f in flat for k in f))
    return [(k, [f.get(k) for f in flat]) for k in keys if len({json.dumps(f.get(k)) for f in flat}) > 1]


# ---------------------------------------------------------------- the comparison

def compare_runs(runs: list[str | Path], n_boot: int = N_BOOT, seed: int = 0, progress: bool = False,
                 decide: str | None = None) -> Comparison:
    """Score every run's best checkpoint on the shared test side under one decision rule (``decide``; None: the
    first run's own) and compare each with the first.

    >>> c = compare_runs(["runs/a", "runs/b"])  # doctest: +SKIP
    >>> [(r.name, r.diffs[1].verdict) for r in c.rows if r.metric == "accuracy"]  # doctest: +SKIP
    [('gender', 'better'), ('age', 'no detectable difference'), ..., ('MEAN', 'better')]
    """
    paths = [Path(r) for r in runs]
    if len(paths) < 2:
        raise AttrfitError("compare needs at least two run folders")
    if len({checkpoint.resolve(p).resolve() for p in paths}) < len(paths):
        raise AttrfitError("a checkpoint is named twice (a run folder stands for its best.pt); give each "
                           "checkpoint once")
    if n_boot < 100:
        raise AttrfitError(f"--n-boot {n_boot} is too few resamples for a 95% interval; use 1000 or more")
    assignment = check_same_test_images(paths)
    first = load_run(paths[0], progress, decide)
    loaded = [first] + [load_run(p, progress, first.scored.rule) for p in paths[1:]]
    check_same_rows(loaded)
    schema = loaded[0].scored.schema
    rows = compare_rows(loaded, n_boot, seed)
    return Comparison([run_info(LETTERS[i], x) for i, x in enumerate(loaded)], len(loaded[0].scored.paths),
                      assignment, list(schema.heads), config_diff(loaded), rows, n_boot, ALPHA,
                      [x.metrics for x in loaded], first.scored.rule)


def compare_rows(loaded: list[Loaded], n_boot: int, seed: int) -> list[Row]:
    """Per metric: one row per head (Holm over heads), then the mean row; then binary-table rows."""
    schema, labels = loaded[0].scored.schema, loaded[0].scored.labels
    hits = [np.stack([x.scored.predicted(j) == labels[:, j] for j in range(len(schema.heads))], 1) for x in loaded]
    idx = resample_indices(len(labels), n_boot, seed)
    point_idx = np.arange(len(labels))[None]
    boot, point = [], []  # per run: {metric: B x H} and {metric: 1 x H}
    for h in hits:
        per_head = [head_scores(labels[:, j], h[:, j], k, idx) for j, k in enumerate(schema.num_classes)]
        boot.append({m: np.stack([s[m] for s in per_head], 1) for m in METRICS})
        per_head = [head_scores(labels[:, j], h[:, j], k, point_idx) for j, k in enumerate(schema.num_classes)]
        point.append({m: np.stack([s[m] for s in per_head], 1)[0] for m in METRICS})
    rows = []
    for m in METRICS:
        rows += metric_rows(m, list(schema.heads), point, boot)
    return rows + instance_rows(loaded, idx)


def metric_rows(metric: str, heads: list[str], point: list[dict], boot: list[dict]) -> list[Row]:
    """Rows of one metric: each head (verdicts Holm-corrected over heads) and the mean over heads."""
    base_p, base_b = point[0][metric], boot[0][metric]
    labelled = np.isfinite(base_p)  # heads with labelled test images (the mean skips the others)
    head_diffs, mean_diffs = [], []
    for pt, bt in zip(point[1:], boot[1:]):
        d_point, d_boot = pt[metric] - base_p, bt[metric] - base_b
        ps = [bootstrap_p(d_boot[:, j]) for j in range(len(heads))]
        adjusted = holm(ps)
        head_diffs.append([make_diff(d_point[j], d_boot[:, j], ps[j], adjusted[j]) for j in range(len(heads))])
        mean_b = np.nanmean(d_boot[:, labelled], 1) if labelled.any() else np.full(len(d_boot), np.nan)
        mean_diffs.append(make_diff(float(np.mean(d_point[labelled])) if labelled.any() else math.nan, mean_b,
                                    bootstrap_p(mean_b), None))
    rows = [Row(h, metric, [float(p[metric][j]) for p in point], [None] + [d[j] for d in head_diffs])
            for j, h in enumerate(heads)]
    means = [float(np.mean(p[metric][labelled])) if labelled.any() else math.nan for p in point]
    return rows + [Row("MEAN", metric, means, [None] + mean_diffs, summary=True)]


def make_diff(value: float, boot: np.ndarray, p: float, p_holm: float | None) -> Diff:
    finite = boot[np.isfinite(boot)]
    lo, hi = np.quantile(finite, [ALPHA / 2, 1 - ALPHA / 2]) if finite.size else (math.nan, math.nan)
    decide = p if p_holm is None else p_holm
    return Diff(float(value), (float(lo), float(hi)), p, p_holm, verdict(float(value), decide))


def instance_rows(loaded: list[Loaded], idx: np.ndarray) -> list[Row]:
    """For tables of binary attributes: mA is the balanced-accuracy mean above; here the instance-based
    accuracy, precision, recall and F1, each with its paired difference (one test per row)."""
    from attrfit.evaluation.scoring import binary_table
    from attrfit.evaluation.metrics import instance_ratios

    schema, labels = loaded[0].scored.schema, loaded[0].scored.labels
    positive = binary_table(schema)
    if positive is None:
        return []
    pos = np.asarray(positive)
    target = np.where(labels < 0, -1, (labels == pos).astype(np.int64))
    point, boot = [], []
    for x in loaded:
        pred = (np.stack([x.scored.predicted(j) for j in range(len(x.scored.probs))], 1) == pos).astype(np.int64)
        r = instance_ratios(pred, target)
        point.append(_instance_from_means({k: v.mean(keepdims=True) for k, v in r.items()}))
        boot.append(_instance_from_means({k: v[idx].mean(1) for k, v in r.items()}))
    rows = []
    for m in ("accuracy", "precision", "recall", "f1"):
        diffs = [None] + [make_diff(float(p[m][0] - point[0][m][0]), b[m] - boot[0][m], bootstrap_p(b[m] - boot[0][m]),
                                    None) for p, b in zip(point[1:], boot[1:])]
        rows.append(Row(f"instance {m}", "binary attributes", [float(p[m][0]) for p in point], diffs, summary=True))
    return rows


def _instance_from_means(means: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    p, r = means["precision"], means["recall"]
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    return {**means, "f1": f1}


# ---------------------------------------------------------------- the method, in words

def method_text(c: Comparison) -> str:
    return (f"Every run's labels come from the decision rule {c.rule} (each run's own fitted strength and "
            f"thresholds where the rule uses them). Differences are each run minus run A on the same {c.n_images} "
            f"test images; intervals are 95% paired percentile bootstraps ({c.n_boot} resamples of the images, every "
            "run scored on the same resample). "
            f"Verdicts: 'better'/'worse' when the two-sided bootstrap p-value is below {c.alpha}; per-head verdicts "
            f"use Holm-adjusted p-values over the {len(c.heads)} heads (per metric and pair of runs); each summary "
            "row (MEAN, instance-based) is one test of its own. 'no detectable difference' means these images "
            "cannot tell the runs apart, not that the runs are equal.")
