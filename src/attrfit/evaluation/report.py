"""Stage 9: the run report, one self-contained HTML file that says how good the model really is.

``attrfit report RUN`` (and ``attrfit train`` at its end) scores the run's best checkpoint on
one side of its split and writes ``RUN/report.html``: every figure is embedded as a
``data:`` URI, so the file alone opens offline in any browser; the same figures are also
written as PNGs to ``RUN/report_files/`` beside it. The val-side report goes to
``report_val.html`` (and ``report_val_files/``) so it never replaces the test one.

The report reads ``config.json``, ``environment.json``, ``results.json``, ``split_ref.json``
(and the split file), ``metrics.csv`` and ``lr_find/lr_find.png`` when present. It holds:
warnings, a per-head table (accuracy, balanced accuracy, macro-F1, majority-class
accuracy, the gain over it, 95% bootstrap intervals, n), training curves, the LR and
momentum schedule, the LR range test, a row-normalised confusion matrix per head, and a
summary of the data, the split, the config and the hardware.

Warnings and their thresholds (on the reported side unless said otherwise):

    collapsed     one class makes up >= 95% of a head's predictions (metrics.COLLAPSE_SHARE)
    near chance   1/K lies inside the 95% bootstrap interval of balanced accuracy,
                  K = classes present in the labels (balanced accuracy averages over them)
    no gain       0 lies inside the 95% paired-bootstrap interval of accuracy minus
                  majority-class accuracy (or the whole interval is below 0)
    val >> test   val accuracy at the best epoch exceeds test accuracy by more than
                  1.96 * sqrt(pv(1-pv)/nv + pt(1-pt)/nt) (two-proportion test at 95%)
                  and by at least VAL_TEST_MIN_GAP
    overfitting   train accuracy - val accuracy >= OVERFIT_GAP at the best epoch; train
                  accuracy is measured on augmented batches while the weights move, so it
                  understates the true gap
    duplicates    the split file lists byte-identical images on different sides

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, no global
backend switch), so making a report never touches a user's interactive session.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from attrfit.core import files, outputs
from attrfit.core.errors import AttrfitError
from attrfit.data.split import Split
from attrfit.model.checkpoint import Checkpoint
from attrfit.evaluation import mistakes
from attrfit.evaluation.metrics import is_collapsed
from attrfit.evaluation.results import HeadMetrics, InstanceMetrics, MeanMetrics, Results

log = logging.getLogger(__name__)

VAL_TEST_MIN_GAP = 0.02
OVERFIT_GAP = 0.10
N_BOOT = 1000
ALPHA = 0.05  # 95% intervals
DPI = 100
WIDE_MATRIX = 6  # confusion matrices of more classes get the page's full width
# Bounds that keep the report's memory and size fixed whatever the number of classes and heads
# (a 500-class head once asked matplotlib for a 27,000-pixel matrix).
MATRIX_CLASSES = 20  # a confusion matrix shows this many most frequent true classes, the rest pooled as 'other'
MAX_MATRICES = 40  # confusion matrices drawn; further heads are in the table only
MAX_PANELS = 24  # heads with a panel in the accuracy figure
MAX_LEGEND = 20  # heads named in the loss figure's legend
LABEL_CHARS = 28  # class and head names in figures are cut to this many characters
LISTED_CLASSES = 20  # classes listed per head in the data table
NO_LABELS = "n/a"  # a head with no labelled rows on the reported side


# ---------------------------------------------------------------- per-head numbers

@dataclass(frozen=True)
class HeadRow:
    """One head on one side: point estimates, 95% intervals, and what the head mostly predicts."""

    head: str
    n: int  # labelled samples
    classes_present: int  # classes in the labels (balanced accuracy averages over these)
    accuracy: float
    accuracy_ci: tuple[float, float]
    balanced_accuracy: float
    balanced_accuracy_ci: tuple[float, float]
    macro_f1: float
    majority_class: str  # most frequent class on the train side
    majority_accuracy: float  # accuracy of always answering majority_class
    gain: float  # accuracy - majority_accuracy
    gain_ci: tuple[float, float]
    top_class: str  # the class this head predicts most often
    top_share: float  # its share of the predictions

    @property
    def chance(self) -> float:
        """Balanced accuracy of a constant or random guess: 1 / classes present."""
        return 1.0 / max(1, self.classes_present)


def gain_ci(pred: np.ndarray, target: np.ndarray, majority_class: int, n_boot: int = N_BOOT,
            alpha: float = ALPHA, seed: int = 0) -> tuple[float, float]:
    """Paired percentile-bootstrap interval of accuracy minus majority-class accuracy.

    Per labelled row d = [pred == target] - [target == majority] is -1, 0 or +1, and the
    gain is mean(d). Resampling n rows with replacement is a multinomial draw over those
    three values, so each resample costs O(1). Paired, so the baseline's own sampling noise
    cancels where the model agrees with it. Rows with target -1 are skipped.

    Example:
        >>> t = np.array([0, 0, 0, 1] * 50)
        >>> gain_ci(np.zeros(200, int), t, majority_class=0)
        (0.0, 0.0)
    """
    pred, target = np.asarray(pred).reshape(-1), np.asarray(target).reshape(-1)
    keep = target != -1
    d = (pred[keep] == target[keep]).astype(np.int64) - (target[keep] == majority_class).astype(np.int64)
    n = d.size
    if n == 0:
        return float("nan"), float("nan")
    share = np.bincount(d + 1, minlength=3) / n  # shares of -1, 0, +1
    draws = np.random.default_rng(seed).multinomial(n, share, size=n_boot)
    lo, hi = np.quantile((draws[:, 2] - draws[:, 0]) / n, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def head_row(head: str, probs: np.ndarray, target: np.ndarray, classes: tuple[str, ...], majority: int,
             n_boot: int = N_BOOT, seed: int = 0) -> HeadRow:
    """Metrics and intervals of one head from its N x K probabilities and N targets (-1 missing)."""
    from attrfit.evaluation.metrics import bootstrap_ci, head_metrics

    pred = probs.argmax(1)
    k = len(classes)
    m = head_metrics(pred, target, k, majority)
    labelled = pred[target != -1]
    top = int(np.bincount(labelled, minlength=k).argmax()) if labelled.size else 0
    return HeadRow(
        head=head, n=m.n, classes_present=int(np.unique(target[target != -1]).size),
        accuracy=m.accuracy, accuracy_ci=bootstrap_ci(pred, target, k, "accuracy", n_boot, ALPHA, seed),
        balanced_accuracy=m.balanced_accuracy,
        balanced_accuracy_ci=bootstrap_ci(pred, target, k, "balanced_accuracy", n_boot, ALPHA, seed),
        macro_f1=m.macro_f1, majority_class=classes[majority], majority_accuracy=m.majority_accuracy,
        gain=m.gain, gain_ci=gain_ci(pred, target, majority, n_boot, ALPHA, seed),
        top_class=classes[top], top_share=m.pred_top_share,
    )


def head_table_rows(scored, majority: list[int], n_boot: int = N_BOOT, seed: int = 0) -> list[HeadRow]:
    """One :class:`HeadRow` per head of an :class:`attrfit.evaluation.scoring.Scored`.

    ``majority`` is each head's most frequent class on the train side (what the
    majority-class baseline answers).

    >>> rows = head_table_rows(score_checkpoint("runs/demo"), [0, 1, 0])  # doctest: +SKIP
    >>> rows[0].accuracy_ci  # doctest: +SKIP
    (0.68, 0.74)
    """
    schema = scored.schema
    return [head_row(h, scored.probs[j], scored.labels[:, j], schema.classes[h], majority[j], n_boot, seed)
            for j, h in enumerate(schema.heads)]


# ---------------------------------------------------------------- warnings, in plain words

def num(x, fmt: str = "{:.3f}") -> str:
    """A number for people: 3 decimals by default, '–' for missing or NaN."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return fmt.format(x)


def signed(x) -> str:
    """+0.123 / -0.123; a value that rounds to zero is 0.000 (never '-0.000')."""
    text = num(x, "{:+.3f}")
    return "0.000" if text in ("+0.000", "-0.000") else text


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _ci(ci: tuple[float, float], sign: bool = False) -> str:
    fmt = signed if sign else num
    return f"95% CI {fmt(ci[0])} to {fmt(ci[1])}"


def collapse_warnings(rows: list[HeadRow], side: str) -> list[str]:
    """A head that answers one class for most of the side's images (:func:`attrfit.evaluation.metrics.is_collapsed`)."""
    out = []
    for r in rows:
        if is_collapsed(r.top_share, r.n):
            which = "the majority class" if r.top_class == r.majority_class else "one class"
            out.append(f"{r.head}: predicts '{r.top_class}' for {_pct(r.top_share)} of {side} images; "
                       f"the head has collapsed to {which}, so its accuracy ({r.accuracy:.3f}) says nothing "
                       f"(balanced accuracy {r.balanced_accuracy:.3f}, chance {r.chance:.3f}).")
    return out


def chance_warnings(rows: list[HeadRow]) -> list[str]:
    """Balanced accuracy whose 95% interval contains chance, 1/K (collapsed heads already warned)."""
    out = []
    for r in rows:
        lo, hi = r.balanced_accuracy_ci
        if r.classes_present >= 2 and not is_collapsed(r.top_share) and lo <= r.chance <= hi:
            out.append(f"{r.head}: balanced accuracy {r.balanced_accuracy:.3f} ({_ci(r.balanced_accuracy_ci)}) "
                       f"cannot be told apart from chance ({r.chance:.3f} for {r.classes_present} classes); "
                       "the head has not learned to tell its classes apart.")
    return out


def gain_warnings(rows: list[HeadRow]) -> list[str]:
    """Accuracy no better (or worse) than always answering the majority class."""
    out = []
    for r in rows:
        lo, hi = r.gain_ci
        if is_collapsed(r.top_share, r.n) or not r.n or lo > 0:
            continue
        rule = f"always answering '{r.majority_class}' ({r.majority_accuracy:.3f})"
        detail = f"gain {signed(r.gain)}, {_ci(r.gain_ci, sign=True)}"
        if hi < 0:
            out.append(f"{r.head}: accuracy {r.accuracy:.3f} is below {rule} ({detail}); on accuracy alone "
                       "the majority rule wins (look at balanced accuracy for what the head does learn).")
        else:
            out.append(f"{r.head}: accuracy {r.accuracy:.3f} cannot be told apart from {rule} ({detail}).")
    return out


def val_test_warnings(val_heads: dict[str, HeadMetrics], test_heads: dict[str, HeadMetrics]) -> list[str]:
    """Heads whose best-epoch val accuracy is above test by more than sampling noise explains.

    Both arguments are :attr:`Results.heads`.
    """
    out = []
    for h, v in val_heads.items():
        t = test_heads.get(h)
        if not t or not v.n or not t.n:
            continue
        pv, nv, pt, nt = v.accuracy, v.n, t.accuracy, t.n
        noise = 1.96 * math.sqrt(pv * (1 - pv) / nv + pt * (1 - pt) / nt)
        gap = pv - pt
        if gap > noise and gap >= VAL_TEST_MIN_GAP:
            out.append(f"{h}: val accuracy {pv:.3f} (n={nv}) is well above test {pt:.3f} (n={nt}), a gap of "
                       f"{gap:.3f} where sampling noise explains up to {noise:.3f}. The best epoch was picked "
                       "on val, so val is optimistic (or the two sides differ); trust the test number.")
    return out


def overfit_warnings(train_acc: dict[str, float], val_acc: dict[str, float], epoch: int | None) -> list[str]:
    """Heads whose train accuracy is OVERFIT_GAP or more above val accuracy (same epoch)."""
    out = []
    when = f" at epoch {epoch}" if epoch else ""
    for h, tr in train_acc.items():
        va = val_acc.get(h)
        if va is None or not (math.isfinite(tr) and math.isfinite(va)):
            continue
        if tr - va >= OVERFIT_GAP:
            out.append(f"{h}: train accuracy {tr:.3f} vs val {va:.3f}{when}; the model fits its training "
                       "images far better than new ones (overfitting). More data, stronger augmentation, "
                       "more weight decay or fewer epochs help.")
    return out


def duplicate_warnings(dups: list[list[str]] | None) -> list[str]:
    """``dups``: the split's exact duplicates across sides, [side_a, path_a, side_b, path_b] each."""
    if not dups:
        return []
    a_side, a, b_side, b = dups[0]
    return [f"split: {len(dups)} image(s) have byte-identical copies on another side "
            f"(e.g. {a_side} {a} = {b_side} {b}); scores on those images are inflated."]


def warnings_for(rows: list[HeadRow], side: str, val_heads: dict[str, HeadMetrics] | None = None,
                 test_heads: dict[str, HeadMetrics] | None = None,
                 train_acc: dict[str, float] | None = None, val_acc: dict[str, float] | None = None,
                 best_epoch: int | None = None, duplicates: list[list[str]] | None = None) -> list[str]:
    """Every warning that applies, in plain words, as "HEAD: ..." (or "split: ..."), grouped by head.

    Example:
        >>> r = HeadRow("age", 100, 5, 0.4, (0.3, 0.5), 0.2, (0.2, 0.2), 0.1, "25-35", 0.4, 0.0,
        ...             (0.0, 0.0), "25-35", 1.0)
        >>> warnings_for([r], "test")[0][:40]
        "age: predicts '25-35' for 100% of test i"
    """
    out = collapse_warnings(rows, side) + chance_warnings(rows) + gain_warnings(rows)
    if val_heads and test_heads:
        out += val_test_warnings(val_heads, test_heads)
    if train_acc and val_acc:
        out += overfit_warnings(train_acc, val_acc, best_epoch)
    order = {r.head: i for i, r in enumerate(rows)}
    out.sort(key=lambda w: order.get(w.partition(": ")[0], len(order)))  # stable: per head, kinds in order
    return duplicate_warnings(duplicates) + out


# ---------------------------------------------------------------- figures

def mpl_text(text: str) -> str:
    """User text for matplotlib: a '$' would otherwise start math mode (and can fail to parse)."""
    return str(text).replace("$", r"\$")


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _series(rows: list[dict], key: str) -> np.ndarray:
    """One metrics.csv column as floats (nan where absent or empty)."""
    def to_float(v) -> float:
        try:
            return float(v)
        except (TypeError, ValueError):
            return float("nan")
    return np.array([to_float(r.get(key)) for r in rows])


def loss_figure(metrics: list[dict], heads: tuple[str, ...]) -> Figure:
    """Train loss per epoch: the weighted total and each head's own cross-entropy."""
    epochs = _series(metrics, "epoch")
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    total, per_head = fig.subplots(1, 2)
    total.plot(epochs, _series(metrics, "train_loss"), "k-o", ms=4)
    total.set(xlabel="epoch", ylabel="loss", title="total (weighted sum over heads)")
    for h in heads:
        per_head.plot(epochs, _series(metrics, f"train_loss_{h}"), "-o", ms=3, lw=1.2, label=mpl_text(short(h)))
    if len(heads) <= MAX_LEGEND:
        per_head.set(xlabel="epoch", ylabel="cross-entropy", title="per head")
        per_head.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:  # a legend of hundreds of names would be taller than the page
        per_head.set(xlabel="epoch", ylabel="cross-entropy", title=f"per head ({len(heads)} heads, unnamed)")
    for ax in (total, per_head):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    return fig


def accuracy_figure(metrics: list[dict], heads: tuple[str, ...], num_classes: list[int],
                    best_epoch: int | None) -> Figure:
    """One panel per head (the first MAX_PANELS): val accuracy and balanced accuracy, train accuracy, baselines."""
    epochs = _series(metrics, "epoch")
    heads, num_classes = heads[:MAX_PANELS], num_classes[:MAX_PANELS]
    cols = min(4, len(heads))
    nrows = math.ceil(len(heads) / cols)
    fig = Figure(figsize=(3.3 * cols, 2.6 * nrows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, cols, sharex=True, squeeze=False)).ravel()
    for ax, h, k in zip(axes, heads, num_classes):
        ax.plot(epochs, _series(metrics, f"val_accuracy_{h}"), "-o", ms=3, color="C0", label="val accuracy")
        ax.plot(epochs, _series(metrics, f"val_balanced_accuracy_{h}"), "-s", ms=3, color="C1",
                label="val balanced acc.")
        ax.axhline(1 / k, color="C1", ls=":", lw=1, zorder=1, label="chance for balanced acc. (1/K)")
        ax.plot(epochs, _series(metrics, f"train_accuracy_{h}"), ":", color="C2", label="train accuracy")
        ax.plot(epochs, _series(metrics, f"val_majority_accuracy_{h}"), "--", color="0.5",
                label="majority baseline")
        if best_epoch:
            ax.axvline(best_epoch, color="C3", lw=0.8, alpha=0.6)
        ax.set_title(mpl_text(short(h)), fontsize=10)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in axes[len(heads):]:
        ax.set_visible(False)
    for ax in axes[(nrows - 1) * cols:]:
        ax.set_xlabel("epoch")
    handles, labels = axes[0].get_legend_handles_labels()
    if best_epoch:
        handles.append(Line2D([], [], color="C3", lw=0.8, alpha=0.6))
        labels.append("best epoch")
    fig.legend(handles, labels, loc="outside upper center", ncol=6, fontsize=8)
    return fig


def schedule_figure(cfg, total_steps: int, steps_per_epoch: float, max_lr: float, metrics: list[dict]) -> Figure:
    """The LR and momentum the schedule gave each step (recomputed), with the LR logged per epoch."""
    from attrfit.recipe.schedule import lr_at, momentum_at

    steps = np.unique(np.linspace(0, total_steps - 1, min(total_steps, 1500)).astype(int))
    lrs = [lr_at(int(s), total_steps, max_lr, cfg.schedule) for s in steps]
    moms = [momentum_at(int(s), total_steps, cfg.schedule, cfg.optim.momentum) for s in steps]
    x = (steps + 1) / steps_per_epoch  # epochs done after the step
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax_lr, ax_m = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    ax_lr.plot(x, lrs, color="C0", label="schedule")
    ax_lr.plot(_series(metrics, "epoch"), _series(metrics, "lr"), "o", ms=4, color="C3", label="logged (end of epoch)")
    ax_lr.set(ylabel="learning rate", title=f"{cfg.schedule.kind} schedule, max LR {max_lr:.3g}, {total_steps} steps")
    ax_lr.legend(fontsize=8)
    ax_lr.grid(alpha=0.3)
    beta = "beta1 (AdamW)" if cfg.optim.optimizer == "adamw" else "momentum"
    ax_m.plot(x, moms, color="C2")
    ax_m.set(xlabel="epoch", ylabel=beta)
    ax_m.grid(alpha=0.3)
    return fig


def short(text: str, limit: int = LABEL_CHARS) -> str:
    """A name cut for a figure ('…' marks the cut), so long class names cannot widen it without bound."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pool_classes(cm: np.ndarray, classes: tuple[str, ...], limit: int = MATRIX_CLASSES) -> tuple[np.ndarray, list[str]]:
    """The ``limit`` most frequent true classes of a K x K matrix, most frequent first, the rest pooled as 'other'.

    Ties go to the more often predicted class, then the lower index. With K <= limit the
    matrix and names come back as they are.

    Example:
        >>> cm = np.diag([5, 1, 9])
        >>> small, names = pool_classes(cm, ("a", "b", "c"), limit=2)
        >>> names, small.tolist()
        (['c', 'a', 'other (1 class)'], [[9, 0, 0], [0, 5, 0], [0, 0, 1]])
    """
    k = len(classes)
    if k <= limit:
        return cm, list(classes)
    order = np.lexsort((np.arange(k), -cm.sum(0), -cm.sum(1)))[:limit]  # last key sorts first
    slot = np.full(k, limit)
    slot[order] = np.arange(limit)
    small = np.zeros((limit + 1, limit + 1), dtype=cm.dtype)
    np.add.at(small, (slot[:, None], slot[None, :]), cm)
    rest = k - limit
    return small, [classes[i] for i in order] + [f"other ({rest} class{'es' if rest > 1 else ''})"]


def confusion_figure(cm: np.ndarray, classes: tuple[str, ...], head: str, side: str) -> Figure:
    """Row-normalised confusion matrix (rows = true class, with its count; columns = predicted).

    At most MATRIX_CLASSES classes are drawn (the most frequent; the rest pooled as 'other',
    said in the title), so the figure stays under ~14 inches whatever K is.
    """
    cm, names = pool_classes(cm, classes)
    k = len(names)
    support = cm.sum(1)
    norm = cm / np.maximum(support, 1)[:, None]
    side_in = max(3.2, 0.55 * k + 2.2)
    fig = Figure(figsize=(side_in, side_in), layout="constrained")
    ax = fig.subplots()
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fs = 9 if k <= WIDE_MATRIX else 8
    for i in range(k):
        for j in range(k):
            if support[i]:
                ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center", fontsize=fs,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), [mpl_text(short(c)) for c in names], rotation=40, ha="right", fontsize=fs)
    ax.set_yticks(range(k), [mpl_text(f"{short(c)} ({n})") for c, n in zip(names, support)], fontsize=fs)
    pooled = f"; {k - 1} most frequent of {len(classes)} classes" if len(classes) > MATRIX_CLASSES else ""
    ax.set(xlabel="predicted", ylabel="true class (n)",
           title=mpl_text(f"{short(head, 40)}: % of each true class ({side}{pooled})"))
    return fig


# ---------------------------------------------------------------- what the run folder holds

@dataclass
class RunFacts:
    """Everything the report reads from a run folder besides the scored predictions."""

    run: Path
    config: dict
    environment: dict
    results: Results | None  # results.json (test side, best checkpoint); None if training never finished
    split_ref: dict
    split: Split
    split_path: Path
    metrics: list[dict]  # metrics.csv rows (strings)
    table: object  # attrfit.data.table.Table
    sides: dict[str, np.ndarray]  # table row indices per side


def _optional_json(path: Path) -> dict | None:
    from attrfit.core import runs

    return runs.read_json(path) if path.is_file() else None


def read_run(run: Path, scored) -> RunFacts:
    """Read the run folder's files, and the table and split the best checkpoint was trained on."""
    from attrfit.core import runs
    from attrfit.recipe.config import from_dict
    from attrfit.data.dataset import read_checked, saved_run_config

    cfg = from_dict(scored.checkpoint.config)
    table, split, split_path, sides = read_checked(saved_run_config(cfg.data, run), scored.schema, create_split=False)
    return RunFacts(run, scored.checkpoint.config, _optional_json(run / "environment.json") or {},
                    read_results(run / "results.json"), _optional_json(run / "split_ref.json") or {},
                    split, Path(split_path), runs.MetricsLog(run / "metrics.csv").rows(), table, sides)


def read_results(path: Path) -> Results | None:
    """``RUN/results.json``, typed; None if training never finished."""
    d = _optional_json(path)
    return None if d is None else Results.from_json(d, str(path))


def best_row(metrics: list[dict], epoch: int | None) -> dict | None:
    for r in metrics:
        if epoch is not None and int(float(r["epoch"])) == epoch:
            return r
    return metrics[-1] if metrics else None


def train_val_accuracy(row: dict | None, heads: tuple[str, ...]) -> tuple[dict, dict]:
    """(train accuracy, val accuracy) per head from one metrics.csv row."""
    if row is None:
        return {}, {}
    train = {h: float(row.get(f"train_accuracy_{h}") or "nan") for h in heads}
    val = {h: float(row.get(f"val_accuracy_{h}") or "nan") for h in heads}
    return train, val


# ---------------------------------------------------------------- the report

@dataclass
class Report:
    """A rendered report: the HTML (figures embedded), the figures as PNG bytes, the warnings."""

    html: str
    figures: dict[str, bytes] = field(default_factory=dict)  # file name -> PNG
    warnings: list[str] = field(default_factory=list)


def default_out(run: Path, side: str) -> Path:
    return Path(run) / ("report.html" if side == "test" else f"report_{side}.html")


def files_dir(out: Path) -> Path:
    """Where the PNGs go beside ``out``: report.html -> report_files/."""
    return out.with_name(out.stem + "_files")


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "head"


def make_figures(facts: RunFacts, scored, rows: list[HeadRow], side: str) -> dict[str, tuple[str, bytes]]:
    """File name -> (caption, PNG) for every figure of the report, in reading order."""
    from attrfit.recipe.config import from_dict
    from attrfit.evaluation.metrics import confusion_matrix

    schema, ckpt = scored.schema, scored.checkpoint
    best = ckpt.progress.best_epoch
    figs: dict[str, tuple[str, bytes]] = {}
    if facts.metrics:
        figs["loss.png"] = ("Training loss per epoch.", png_bytes(loss_figure(facts.metrics, schema.heads)))
        figs["accuracy.png"] = (
            "Val accuracy and balanced accuracy per epoch beside the majority-class baseline; train accuracy "
            "is measured on augmented batches during the epoch. The red line marks the best epoch."
            + (f" The first {MAX_PANELS} of {len(schema.heads)} heads are drawn; the table has them all."
               if len(schema.heads) > MAX_PANELS else ""),
            png_bytes(accuracy_figure(facts.metrics, schema.heads, schema.num_classes, best)))
        per_epoch = float(facts.metrics[0]["step"]) / float(facts.metrics[0]["epoch"])
        cfg = from_dict(facts.config)
        total = max(1, round(cfg.epochs * per_epoch))
        figs["schedule.png"] = ("Learning rate and momentum of every step, recomputed from the config.",
                                png_bytes(schedule_figure(cfg, total, per_epoch, float(ckpt.max_lr), facts.metrics)))
    lr_png = facts.run / "lr_find" / "lr_find.png"
    if lr_png.is_file():
        figs["lr_find.png"] = ("LR range test (run before training to pick the max LR).", lr_png.read_bytes())
    for j, h in enumerate(schema.heads[:MAX_MATRICES]):
        if not rows[j].n:
            continue  # nothing to draw; the table says n/a
        classes = schema.classes[h]
        cm = confusion_matrix(scored.probs[j].argmax(1), scored.labels[:, j], len(classes))
        pooled = (f" The {MATRIX_CLASSES} most frequent of its {len(classes)} classes are drawn; the rest are pooled "
                  "as 'other'." if len(classes) > MATRIX_CLASSES else "")
        figs[f"confusion_{j:02d}_{safe_name(h)}.png"] = (
            f"{h}: accuracy {rows[j].accuracy:.3f}, balanced accuracy {rows[j].balanced_accuracy:.3f}, "
            f"n={rows[j].n}.{pooled}",
            png_bytes(confusion_figure(cm, classes, h, side)))
    return figs


def matrices_note(rows: list[HeadRow]) -> str:
    """What the confusion-matrix section leaves out (heads without labels, heads past MAX_MATRICES)."""
    notes = []
    empty = [r.head for r in rows[:MAX_MATRICES] if not r.n]
    if empty:
        notes.append(f"No matrix for {', '.join(empty)}: no labelled rows on this side.")
    if len(rows) > MAX_MATRICES:
        notes.append(f"Matrices are drawn for the first {MAX_MATRICES} of {len(rows)} heads; the table above has "
                     "every head.")
    return " ".join(notes)


def make_report(run: str | Path, side: str = "test", progress: bool = False, n_boot: int = N_BOOT,
                scored=None) -> Report:
    """Score the run's best checkpoint on ``side`` and render the report (nothing is written).

    ``scored`` (an :class:`attrfit.evaluation.scoring.Scored` of best.pt on ``side``) skips the scoring:
    ``attrfit train`` passes the one it has just computed.

    >>> report = make_report("runs/demo")  # doctest: +SKIP
    >>> report.warnings  # doctest: +SKIP
    ["age: predicts '25-35' for 97% of test images; the head has collapsed ..."]
    """
    from attrfit.evaluation.scoring import score_checkpoint
    from attrfit.evaluation.metrics import majority_classes

    run = Path(run)
    if side not in ("test", "val"):
        raise AttrfitError(f"report --side must be test or val, not {side!r}")
    if not (run / "best.pt").is_file():
        raise AttrfitError(f"{run}: not a run folder with a best.pt; give the folder 'attrfit train' wrote")
    if scored is None:
        scored = score_checkpoint(str(run), side=side, progress=progress)
    facts = read_run(run, scored)
    majority = majority_classes(facts.table.labels[facts.sides["train"]])
    rows = head_table_rows(scored, majority, n_boot)
    warnings = collect_warnings(facts, scored, rows, side)
    figs = make_figures(facts, scored, rows, side)
    page = render_html(facts, scored, rows, warnings, figs, side)
    return Report(page, {name: data for name, (_, data) in figs.items()}, warnings)


def collect_warnings(facts: RunFacts, scored, rows: list[HeadRow], side: str) -> list[str]:
    best = scored.checkpoint.progress.best_epoch
    val = Results.from_json(scored.checkpoint.val).heads if scored.checkpoint.val else None
    test = scored.results.heads if side == "test" else facts.results.heads if facts.results else None
    train_acc, val_acc = train_val_accuracy(best_row(facts.metrics, best), scored.schema.heads)
    return warnings_for(rows, side, val, test, train_acc, val_acc, best, facts.split.exact_duplicates_across_sides)


GENERATOR = '<meta name="generator" content="attrfit report">'  # marks a page (and its figures) as a report's


def is_report(path: Path) -> bool:
    """Whether ``path`` is a page attrfit's report wrote (so its figures folder is the report's to replace)."""
    try:
        with open(path, "rb") as f:
            return GENERATOR.encode() in f.read(2048)
    except OSError:
        return False


def check_figures_folder(out: Path) -> None:
    """Refuse a report whose figures folder (``<out stem>_files/``) holds files a report did not write."""
    out = Path(out)
    folder = files_dir(out)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise AttrfitError(f"{folder}, where the report's figures go, is a file; choose another --out")
    in_run = outputs.is_run_folder(folder.parent) and folder.name in outputs.RUN_FOLDERS
    if not (in_run or is_report(out)) and any(folder.iterdir()):
        raise AttrfitError(f"{folder}, where the report's figures go, holds files a report did not write; "
                           "choose another --out, or move them")


def save_report(report: Report, out: str | Path) -> Path:
    """Write the HTML and, in ``<out stem>_files/`` beside it, the PNG figures; return the HTML path."""
    out = Path(out)
    folder = files_dir(out)
    check_figures_folder(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.png"):  # figures of an earlier report (e.g. of a head since renamed)
            old.unlink()
        for name, data in report.figures.items():
            (folder / name).write_bytes(data)
        files.write_text(out, report.html, "the report", "pass --out to a writable place")
    except OSError as e:
        raise AttrfitError(f"cannot write the report {out}: {e.strerror or e}; "
                           "pass --out to a writable place") from None
    return out


def write_report(run: str | Path, side: str = "test", out: str | Path | None = None, progress: bool = False,
                 scored=None) -> Path:
    """Score, render and write the report of a run; return the HTML path (RUN/report.html by default).

    >>> write_report("runs/demo")  # doctest: +SKIP
    PosixPath('runs/demo/report.html')
    """
    report = make_report(run, side, progress, scored=scored)
    path = save_report(report, out or default_out(Path(run), side))
    if report.warnings:
        heads = dict.fromkeys(w.split(": ", 1)[0] for w in report.warnings)  # in order, once each
        log.warning("the report has %d warning(s) (%s); read them at the top of %s", len(report.warnings),
                    ", ".join(heads), path)
    else:
        log.info("wrote the report %s", path)
    return path


# ---------------------------------------------------------------- HTML

class Safe(str):
    """Text that is already HTML (never user input); everything else is escaped."""


def esc(value) -> str:
    return value if isinstance(value, Safe) else html.escape(str(value))


def html_table(header: list[str], rows: list[list], cls: str = "") -> Safe:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return Safe(f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')


def kv_table(pairs: list[tuple[str, object]]) -> Safe:
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in pairs)
    return Safe(f'<table class="kv"><tbody>{body}</tbody></table>')


def flagged(text, flag: bool) -> Safe:
    """``text`` marked (orange) where a warning applies to it."""
    return Safe(f'<span class="flag">{esc(text)}</span>') if flag else Safe(esc(text))


def with_ci(x: float, ci: tuple[float, float], sign: bool = False, flag: bool = False) -> Safe:
    fmt = signed if sign else num
    return Safe(f'{flagged(fmt(x), flag)} <span class="ci">{esc(fmt(ci[0]))} – {esc(fmt(ci[1]))}</span>')


def metrics_table(rows: list[HeadRow], mean: MeanMetrics) -> Safe:
    header = ["head", "accuracy (95% CI)", "balanced acc. (95% CI)", "chance 1/K", "macro-F1",
              "majority class", "majority acc.", "gain over majority (95% CI)", "most predicted", "n"]
    body = [_metrics_row(r) for r in rows]
    body.append([Safe("<b>mean</b>"), _or_na(mean.accuracy), _or_na(mean.balanced_accuracy), "",
                 _or_na(mean.macro_f1), "", _or_na(mean.majority_accuracy), _or_na(mean.gain, signed), "", ""])
    table = html_table(header, body, "metrics")
    empty = [r.head for r in rows if not r.n]
    if empty:
        table = Safe(table + f'<p class="note">{NO_LABELS}: {esc(", ".join(empty))} had no labelled rows on this '
                     "side, so no score; the means are over the other heads.</p>")
    return table


def _or_na(x, fmt=num) -> str:
    """A mean, or 'n/a' when no head had labelled rows."""
    return NO_LABELS if x is None or (isinstance(x, float) and not math.isfinite(x)) else fmt(x)


def _metrics_row(r: HeadRow) -> list:
    if not r.n:  # nothing to score: the same 'n/a' as the printed table and evaluate
        return [r.head, NO_LABELS, NO_LABELS, num(r.chance), NO_LABELS, r.majority_class, NO_LABELS, NO_LABELS,
                NO_LABELS, 0]
    return [r.head, with_ci(r.accuracy, r.accuracy_ci),
            with_ci(r.balanced_accuracy, r.balanced_accuracy_ci,
                    flag=r.balanced_accuracy_ci[0] <= r.chance <= r.balanced_accuracy_ci[1]),
            num(r.chance), num(r.macro_f1), r.majority_class, num(r.majority_accuracy),
            with_ci(r.gain, r.gain_ci, sign=True, flag=r.gain_ci[0] <= 0),
            flagged(f"{r.top_class} ({_pct(r.top_share)})", is_collapsed(r.top_share, r.n)), r.n]


def instance_html(m: InstanceMetrics | None) -> Safe:
    """The binary-attribute metrics of the field (mA, instance-based), for tables of 0/1 heads."""
    if m is None:
        return Safe("")
    pairs = [("mA (mean balanced accuracy over attributes)", num(m.mA)),
             ("instance-based accuracy", num(m.accuracy)), ("instance-based precision", num(m.precision)),
             ("instance-based recall", num(m.recall)), ("instance-based F1", num(m.f1))]
    note = ('<p class="note">Every head is a binary attribute, so the pedestrian-attribute field\'s metrics '
            'apply (Li et al. 2016; Jia et al. 2020; defined in the README). Instance-based metrics compare '
            'each image\'s set of predicted attributes with its true set; an image with an empty set scores 0, '
            'as in Jia et al.\'s code.</p>')
    return Safe(f"<h3>Binary attributes ({m.n_attributes})</h3>" + kv_table(pairs) + note)


def data_table(facts: RunFacts, schema, majority_rows: list[HeadRow]) -> Safe:
    labels = facts.table.labels
    body = []
    for j, h in enumerate(schema.heads):
        col = labels[:, j]
        counts = np.bincount(col[col >= 0], minlength=len(schema.classes[h]))
        listed = [f"{c} {n}" for c, n in zip(schema.classes[h], counts)]
        more = len(listed) - LISTED_CLASSES
        if more > 0:  # the most frequent ones, so the list stays readable for any K
            listed = [listed[i] for i in np.argsort(-counts, kind="stable")[:LISTED_CLASSES]] + [f"… and {more} more"]
        classes = ", ".join(listed)
        body.append([h, len(schema.classes[h]), classes, int((col < 0).sum()), majority_rows[j].majority_class])
    return html_table(["head", "K", "classes (rows)", "missing labels", "majority (train side)"], body, "data")


def split_pairs(facts: RunFacts) -> list[tuple[str, object]]:
    s = facts.split
    c = s.counts
    n = sum(c.values()) or 1
    sizes = ", ".join(f"{k} {c[k]} ({c[k] / n:.0%})" for k in ("train", "val", "test") if k in c)
    d = s.exact_duplicates_across_sides
    if d is None:
        dup = "not checked (run 'attrfit split' to make a split that checks byte-identical images)"
    else:
        dup = "none found" if not d else f"{len(d)} image(s) with a byte-identical copy on another side"
    return [("split file", str(facts.split_path)), ("sizes", sizes),
            ("grouping column", s.group_column or "none (rows split independently)"),
            ("stratified by", s.stratify or "–"), ("seed", s.seed),
            ("fingerprint", str(s.fingerprint)[:16]), ("exact duplicates across sides", dup)]


def training_pairs(facts: RunFacts, scored) -> list[tuple[str, object]]:
    env, res, ckpt = facts.environment, facts.results, scored.checkpoint
    prog = ckpt.progress
    wall = res.wall_time_s if res is not None and res.wall_time_s is not None else prog.wall_time
    rate = res.images_per_s if res is not None else None
    cpu = f"{env.get('cpu', '?')} ({env.get('cpu_count', '?')} cores, {env.get('torch_threads', '?')} torch threads)"
    hw = f"{env['cuda']}; host CPU {cpu}" if env.get("cuda") else cpu
    return [("epochs", f"{prog.epoch} of {facts.config.get('epochs')}; best epoch {prog.best_epoch} "
                       f"(picked by {facts.config.get('monitor')} on val)"),
            ("model", model_summary(ckpt)),
            ("max learning rate", num(ckpt.max_lr, "{:.4g}")),
            ("wall time (training)", f"{num(wall, '{:.1f}')} s" + (f" ({wall / 60:.1f} min)" if wall else "")),
            ("training images/s (median over epochs)", num(rate, "{:.0f}")),
            ("device", f"{env.get('device', '?')}, precision {env.get('precision', ckpt.precision)}, "
                       f"{env.get('world_size', 1)} process(es)"),
            ("hardware", hw), ("attrfit", env.get("attrfit", "?")), ("torch", env.get("torch", "?")),
            ("python", env.get("python", "?")), ("platform", env.get("platform", "?"))]


def model_summary(ckpt: Checkpoint) -> str:
    """The resolved model settings and its parameter count (BatchNorm statistics excluded)."""
    args = ckpt.model_args.cfg
    n = sum(v.numel() for k, v in ckpt.model.items() if "running_" not in k and "num_batches" not in k)
    settings = ", ".join(f"{k} {v}" for k, v in args.items() if v is not None)
    return f"{settings}; {n / 1e6:.2f} M parameters"


def figure_html(name: str, caption: str, data: bytes, cls: str = "fig") -> Safe:
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return Safe(f'<figure class="{cls}"><img src="{uri}" alt="{esc(name)}">'
                f'<figcaption>{esc(caption)}</figcaption></figure>')


def warnings_html(warnings: list[str], heads: tuple[str, ...]) -> Safe:
    if not warnings:
        return Safe('<div class="ok">No warnings: no collapsed head, every head beats chance and the majority '
                    'class beyond its confidence interval, val agrees with test, no sign of overfitting.</div>')
    items = "".join(f"<li>{_bold_head(w, heads)}</li>" for w in warnings)
    return Safe(f'<div class="warn"><h2>Warnings ({len(warnings)})</h2><ul>{items}</ul></div>')


def _bold_head(warning: str, heads: tuple[str, ...]) -> str:
    head, sep, rest = warning.partition(": ")
    return f"<b>{esc(head)}</b>: {esc(rest)}" if sep and (head in heads or head == "split") else esc(warning)


def config_html(config: dict) -> Safe:
    """The resolved config as one small table per section (top-level settings under 'run')."""
    sections = {"run": {k: v for k, v in config.items() if not isinstance(v, dict)}}
    sections.update((k, v) for k, v in config.items() if isinstance(v, dict) and k != "data")
    sections["data"] = config.get("data", {})  # the widest, last
    tables = []
    for name, values in sections.items():
        pairs = [(k, v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)) for k, v in values.items()]
        tables.append(f"<div><h3>{esc(name)}</h3>{kv_table(pairs)}</div>")
    return Safe('<div class="config">' + "".join(tables) + "</div>")


def render_html(facts: RunFacts, scored, rows: list[HeadRow], warnings: list[str],
                figs: dict[str, tuple[str, bytes]], side: str) -> str:
    """The whole page (every user string escaped, every image a data: URI)."""
    schema, prog = scored.schema, scored.checkpoint.progress
    curves = [figure_html(n, c, d) for n, (c, d) in figs.items() if not n.startswith("confusion_")]
    matrices = [(n, c, d) for n, (c, d) in figs.items() if n.startswith("confusion_")]  # one per head, in order
    num_classes = {f"{j:02d}": k for j, k in enumerate(schema.num_classes)}  # matrix names: confusion_<j>_<head>
    confusions = [figure_html(n, c, d, "cm wide" if num_classes[n.split("_")[1]] > WIDE_MATRIX else "cm")
                  for n, c, d in matrices]
    note = matrices_note(rows)
    if note:
        confusions.insert(0, f'<p class="note">{esc(note)}</p>')
    n_side = len(scored.paths)
    table = facts.table
    data_pairs = [("labels CSV", str(table.csv_path)), ("rows", len(table.paths)),
                  ("heads", f"{len(schema.heads)}: {', '.join(schema.heads)}"),
                  ("image size", f"{facts.config['data']['size']} ({facts.config['data']['resize']})")]
    parts = {
        "title": esc(f"attrfit report: {facts.run.name}"),
        "subtitle": esc(f"Best checkpoint (epoch {prog.best_epoch}) scored on the {side} side "
                        f"({n_side} images). Run folder {facts.run.resolve()}; report made "
                        f"{time.strftime('%Y-%m-%d %H:%M')}."),
        "warnings": warnings_html(warnings, schema.heads),
        "side": esc(side),
        "metrics": metrics_table(rows, scored.results.mean) + instance_html(scored.results.instance),
        "curves": "\n".join(curves) or "<p>No metrics.csv rows: training did not finish an epoch.</p>",
        "confusions": "\n".join(confusions),
        "mistakes": mistakes.mistakes_html(scored),
        "data": kv_table(data_pairs) + data_table(facts, schema, rows),
        "split": kv_table(split_pairs(facts)),
        "training": kv_table(training_pairs(facts, scored)),
        "config": config_html(facts.config),
        "n_boot": N_BOOT,
    }
    return PAGE.format(css=CSS + mistakes.CSS, **parts)


CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       max-width: 1250px; margin: 0 auto; padding: 1.2em 2em 4em; }
h1 { margin-bottom: .2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
.sub { color: #555; margin-top: 0; }
.warn { background: #fff4e5; border: 1px solid #f0a030; border-radius: 6px; padding: .4em 1.2em; }
.warn h2 { border: 0; margin: .4em 0 0; color: #a05a00; font-size: 1.15em; }
.warn li { margin: .35em 0; }
.ok { background: #eaf7ea; border: 1px solid #5cb85c; border-radius: 6px; padding: .8em 1.2em; }
table { border-collapse: collapse; margin: .6em 0; }
th, td { border-bottom: 1px solid #e4e4e4; padding: .3em .7em; text-align: left; vertical-align: top; }
thead th { background: #f4f4f4; font-weight: 600; }
table.metrics td { white-space: nowrap; font-variant-numeric: tabular-nums; }
table.metrics tr:last-child td { border-top: 2px solid #999; }
table.data td:nth-child(3) { font-size: .9em; }
table.kv th { font-weight: 600; background: none; width: 16em; }
.ci { color: #777; font-size: .85em; }
.note { color: #555; font-size: .92em; max-width: 60em; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; max-width: 60em; }
.cms { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.cms figure { margin: 0; max-width: 48%; }
.cms figure.wide { max-width: 100%; }
.flag { background: #ffe0b0; padding: 0 .25em; border-radius: 3px; }
.config { display: flex; flex-wrap: wrap; gap: 0 2em; align-items: flex-start; }
.config h3 { margin: .8em 0 0; font-size: 1em; }
.config table.kv { font-size: .85em; margin: .2em 0; }
.config table.kv th { width: auto; font-weight: normal; color: #555; }
"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="attrfit report">
<title>{title}</title><style>{css}</style></head>
<body>
<h1>{title}</h1>
<p class="sub">{subtitle}</p>
{warnings}
<h2>Per-head results ({side} side)</h2>
{metrics}
<p class="note">Balanced accuracy is the mean recall over the classes present; chance for it is 1/K.
The majority class is the train side's most common class; always answering it scores the majority
accuracy, and the gain is accuracy minus that. Intervals are 95% percentile bootstraps over the
{side} images ({n_boot} resamples; the gain's is paired). A head is only useful where its gain or its
balanced accuracy clears the baseline beyond the interval.</p>
<h2>Training</h2>
{curves}
<h2>Confusion matrices ({side} side)</h2>
<p class="note">Rows are the true class (with its count), columns the prediction; each cell is the
percentage of its row, so the diagonal is each class's recall. A head that answers one class
shows one dark column.</p>
<div class="cms">
{confusions}
</div>
<h2>Mistakes ({side} side)</h2>
<p class="note">Per head, the class pairs most often confused, and the images the model gets wrong with the
highest confidence (true class, predicted class with its probability, and the probability it gave the
true class). Confident mistakes are often wrong labels: <code>attrfit audit-labels</code> looks for them
on the train and val sides.</p>
{mistakes}
<h2>Data</h2>
{data}
<h2>Split</h2>
{split}
<h2>Run</h2>
{training}
<h2>Config</h2>
{config}
</body></html>
"""
