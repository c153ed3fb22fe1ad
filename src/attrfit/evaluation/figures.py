"""The figures of the report and the comparison page, drawn with matplotlib's object API.

Figures are drawn on the Agg canvas through :class:`matplotlib.figure.Figure` (no pyplot, no global
backend switch), so making a report never touches a user's interactive session. Names of heads
and classes are cut to :data:`LABEL_CHARS` and at most :data:`MATRIX_CLASSES` classes are drawn per
confusion matrix, so a figure's size is bounded whatever the table holds.
"""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D


DPI = 100
WIDE_MATRIX = 6  # confusion matrices of more classes get the page's full width
# Bounds that keep the report's memory and size fixed whatever the number of classes and heads
# (a 500-class head once asked matplotlib for a 27,000-pixel matrix).
MAX_MATRICES = 40  # confusion matrices drawn; further heads are in the table only
MATRIX_CLASSES = 20  # a confusion matrix shows this many most frequent true classes, the rest pooled as 'other'
MAX_PANELS = 24  # heads with a panel in the accuracy figure
MAX_LEGEND = 20  # heads named in the loss figure's legend
LABEL_CHARS = 28  # class and head names in figures are cut to this many characters


def mpl_text(text: str) -> str:
    """User text for matplotlib: a '$' would otherwise start math mode (and can fail to parse)."""
    return str(text).replace("$", r"\$")


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def series(rows: list[dict], key: str) -> np.ndarray:
    """One metrics.csv column as floats (nan where absent or empty)."""
    def to_float(v) -> float:
        try:
            return float(v)
        except (TypeError, ValueError):
            return float("nan")
    return np.array([to_float(r.get(key)) for r in rows])


def short(text: str, limit: int = LABEL_CHARS) -> str:
    """A name cut for a figure ('…' marks the cut), so long class names cannot widen it without bound."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def loss_figure(metrics: list[dict], heads: tuple[str, ...]) -> Figure:
    """Train loss per epoch: the weighted total and each head's own cross-entropy."""
    epochs = series(metrics, "epoch")
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    total, per_head = fig.subplots(1, 2)
    total.plot(epochs, series(metrics, "train_loss"), "k-o", ms=4)
    total.set(xlabel="epoch", ylabel="loss", title="total (weighted sum over heads)")
    for h in heads:
        per_head.plot(epochs, series(metrics, f"train_loss_{h}"), "-o", ms=3, lw=1.2, label=mpl_text(short(h)))
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
    epochs = series(metrics, "epoch")
    heads, num_classes = heads[:MAX_PANELS], num_classes[:MAX_PANELS]
    cols = min(4, len(heads))
    nrows = math.ceil(len(heads) / cols)
    fig = Figure(figsize=(3.3 * cols, 2.6 * nrows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, cols, sharex=True, squeeze=False)).ravel()
    for ax, h, k in zip(axes, heads, num_classes):
        ax.plot(epochs, series(metrics, f"val_accuracy_{h}"), "-o", ms=3, color="C0", label="val accuracy")
        ax.plot(epochs, series(metrics, f"val_balanced_accuracy_{h}"), "-s", ms=3, color="C1",
                label="val balanced acc.")
        ax.axhline(1 / k, color="C1", ls=":", lw=1, zorder=1, label="chance for balanced acc. (1/K)")
        ax.plot(epochs, series(metrics, f"train_accuracy_{h}"), ":", color="C2", label="train accuracy")
        ax.plot(epochs, series(metrics, f"val_majority_accuracy_{h}"), "--", color="0.5",
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
    ax_lr.plot(series(metrics, "epoch"), series(metrics, "lr"), "o", ms=4, color="C3", label="logged (end of epoch)")
    ax_lr.set(ylabel="learning rate", title=f"{cfg.schedule.kind} schedule, max LR {max_lr:.3g}, {total_steps} steps")
    ax_lr.legend(fontsize=8)
    ax_lr.grid(alpha=0.3)
    beta = "beta1 (AdamW)" if cfg.optim.optimizer == "adamw" else "momentum"
    ax_m.plot(x, moms, color="C2")
    ax_m.set(xlabel="epoch", ylabel=beta)
    ax_m.grid(alpha=0.3)
    return fig


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


def curves_figure(labels: list[str], curves: list[list[dict]]) -> Figure:
    """Val mean accuracy and balanced accuracy of every run (``labels``, ``curves``: metrics.csv rows per run),
    by epoch and by training wall time; the first run's majority baseline beside them."""
    fig = Figure(figsize=(11, 6.4), layout="constrained")
    axes = fig.subplots(2, 2, sharey="row")
    for (i, key), (j, x_key) in ((a, b) for a in enumerate(("val_mean_accuracy", "val_mean_balanced_accuracy"))
                                 for b in enumerate(("epoch", "wall_s"))):
        ax = axes[i][j]
        for label, rows in zip(labels, curves):
            ax.plot(series(rows, x_key), series(rows, key), "-o", ms=3, label=mpl_text(label))
        if i == 0 and curves and curves[0]:
            ax.plot(series(curves[0], x_key), series(curves[0], "val_mean_majority_accuracy"), "--",
                    color="0.5", label="majority baseline (A)")
        ax.set(xlabel="epoch" if x_key == "epoch" else "training wall time (s)",
               ylabel=key.replace("val_mean_", "val mean ").replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return fig


def reliability_figure(before, after, heads: int) -> Figure:
    """Reliability diagram pooled over ``heads`` heads: accuracy against the top probability per bin, for the
    model's own softmax (``before``) and the temperature-scaled one (``after``; each a
    :class:`attrfit.evaluation.calibration.Reliability`), and how many predictions fall in each bin."""
    fig = Figure(figsize=(6.4, 5.2), layout="constrained")
    ax, counts = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    ax.plot([0, 1], [0, 1], ":", color="0.5", label="calibrated (accuracy = confidence)")
    for rel, style, label in ((before, "o--", "temperature 1"), (after, "s-", "temperature-scaled")):
        used = rel.count > 0
        ax.plot(rel.confidence[used], rel.accuracy[used], style, ms=4, label=f"{label}: ECE {rel.ece:.3f}")
    ax.set(ylabel="accuracy in the bin", xlim=(0, 1), ylim=(0, 1.02),
           title=f"reliability, pooled over {heads} head{'s' if heads != 1 else ''}")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    width = after.edges[1] - after.edges[0]
    counts.bar(after.edges[:-1], after.count, width=width, align="edge", color="C1", alpha=0.6)
    counts.set(xlabel="top probability (confidence)", ylabel="predictions")
    counts.grid(alpha=0.3)
    return fig
