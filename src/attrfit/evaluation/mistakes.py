"""Looking at the mistakes: the most confident errors per head, and the class pairs most often confused.

What practitioners look at first when a head disappoints (fastai's ``plot_top_losses`` and
``most_confused``): the images the model gets wrong while being sure of itself, which are
often wrong labels, and the confusions that account for most errors. The report adds one
section built from these pieces; ``attrfit audit-labels`` reuses the thumbnails and cards.

Pure functions choose the rows (:func:`confident_errors`, :func:`most_confused`); the rest
renders them as HTML with every thumbnail a small JPEG ``data:`` URI, so a page stays one
self-contained file. The size is bounded for any number of heads, classes and images:
at most :data:`MAX_THUMBNAILS` thumbnails in all (:func:`per_head_budget`), each at most
:data:`THUMB_SIDE` pixels on its longer side, and :data:`TOP_PAIRS` pairs per head.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from attrfit.evaluation.pages import escape

PER_HEAD = 8  # thumbnails per head when there are few heads
MAX_THUMBNAILS = 240  # in the whole page: PETA's 35 heads get 6 each
MIN_PER_HEAD = 2
THUMB_SIDE = 96  # pixels, longer side; the cache may hold 224x224 images
JPEG_QUALITY = 80  # a 96x48 thumbnail is ~2 KB
TOP_PAIRS = 5


@dataclass(frozen=True)
class Mistake:
    """One wrongly predicted, labelled row: its index, true and predicted class, and their probabilities."""

    row: int
    true: int
    pred: int
    prob: float  # predicted probability of ``pred`` (the model's confidence)
    prob_true: float  # predicted probability of the given label


def confident_errors(probs: np.ndarray, target: np.ndarray, top: int, pred: np.ndarray | None = None) -> list[Mistake]:
    """The ``top`` labelled rows the model gets wrong with the highest confidence, most confident first.

    ``probs`` is N x K, ``target`` N class indices (-1 missing), ``pred`` the decision rule's classes (default:
    the most probable). Ties keep row order.

    >>> p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    >>> [(m.row, m.true, m.pred) for m in confident_errors(p, np.array([1, 0, 1, -1]), top=5)]
    [(0, 1, 0), (1, 0, 1), (2, 1, 0)]
    """
    pred = probs.argmax(1) if pred is None else np.asarray(pred)
    wrong = np.flatnonzero((target >= 0) & (pred != target))
    conf = probs[wrong, pred[wrong]]
    order = wrong[np.argsort(-conf, kind="stable")][: max(0, top)]
    return [Mistake(int(i), int(target[i]), int(pred[i]), float(probs[i, pred[i]]), float(probs[i, target[i]]))
            for i in order]


@dataclass(frozen=True)
class Confusion:
    """How often one true class was predicted as another."""

    true: int
    pred: int
    count: int
    share: float  # count / labelled rows of the true class


def most_confused(pred: np.ndarray, target: np.ndarray, num_classes: int, top: int = TOP_PAIRS) -> list[Confusion]:
    """The ``top`` (true, predicted) pairs of different classes by count, largest first; rows with target -1 skipped.

    >>> [(c.true, c.pred, c.count) for c in most_confused(np.array([1, 1, 0, 2]), np.array([0, 0, 0, 1]), 3)]
    [(0, 1, 2), (1, 2, 1)]
    """
    from attrfit.evaluation.metrics import confusion_matrix

    cm = confusion_matrix(pred, target, num_classes)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off.ravel(), kind="stable")[: max(0, top)]
    support = cm.sum(1)
    return [Confusion(int(t), int(p), int(off[t, p]), float(off[t, p] / support[t]))
            for t, p in (divmod(int(i), num_classes) for i in flat) if off[t, p] > 0]


def per_head_budget(n_heads: int, per_head: int = PER_HEAD, total: int = MAX_THUMBNAILS) -> int:
    """Thumbnails per head so the page holds at most ``total`` (never fewer than MIN_PER_HEAD each).

    >>> per_head_budget(8), per_head_budget(35), per_head_budget(1000)
    (8, 6, 2)
    """
    return max(MIN_PER_HEAD, min(per_head, total // max(1, n_heads)))


# ---------------------------------------------------------------- HTML pieces

def thumbnail(image, max_side: int = THUMB_SIDE) -> bytes:
    """A JPEG of one uint8 image (3 x H x W tensor or array), shrunk to at most ``max_side`` pixels."""
    a = np.asarray(image.numpy() if hasattr(image, "numpy") else image)
    im = Image.fromarray(np.ascontiguousarray(a.transpose(1, 2, 0)))
    im.thumbnail((max_side, max_side), Image.Resampling.BOX)  # never enlarges
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def thumbnail_uri(image, max_side: int = THUMB_SIDE) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(thumbnail(image, max_side)).decode("ascii")


def card_html(image, lines: list[str], title: str = "") -> str:
    """One gallery card: the thumbnail (or a grey box when there is no image) above plain-text lines."""
    img = (f'<img src="{thumbnail_uri(image)}" alt="{escape(title)}" title="{escape(title)}">' if image is not None
           else '<div class="noimg">no image</div>')
    text = "".join(f"<div>{escape(t)}</div>" for t in lines)
    return f'<div class="card">{img}{text}</div>'


def mistake_card(m: Mistake, classes: tuple[str, ...], path: str, image) -> str:
    return card_html(image, [f"true: {classes[m.true]}", f"pred: {classes[m.pred]} ({m.prob:.2f})",
                             f"p(true) {m.prob_true:.2f}"], path)


def confused_table(pairs: list[Confusion], classes: tuple[str, ...]) -> str:
    if not pairs:
        return '<p class="note">no errors</p>'
    body = "".join(f"<tr><td>{escape(classes[c.true])}</td><td>{escape(classes[c.pred])}</td><td>{c.count}</td>"
                   f"<td>{100 * c.share:.0f}%</td></tr>" for c in pairs)
    return ('<table class="confused"><thead><tr><th>true</th><th>predicted as</th><th>count</th>'
            f'<th>of the true class</th></tr></thead><tbody>{body}</tbody></table>')


def head_section(head: str, classes: tuple[str, ...], probs: np.ndarray, target: np.ndarray, paths: list[str],
                 images, per_head: int, pred: np.ndarray | None = None) -> str:
    """One head's confused pairs and its gallery of confident mistakes (``images``: N x 3 x H x W or None)."""
    pred = probs.argmax(1) if pred is None else pred
    pairs = most_confused(pred, target, len(classes))
    errors = confident_errors(probs, target, per_head, pred)
    cards = "".join(mistake_card(m, classes, paths[m.row], None if images is None else images[m.row])
                    for m in errors)
    n_wrong = int(((target >= 0) & (pred != target)).sum())
    gallery = f'<div class="gallery">{cards}</div>' if cards else ""
    return (f'<div class="mistakes"><h3>{escape(head)}: {n_wrong} of {int((target >= 0).sum())} wrong</h3>'
            f"{confused_table(pairs, classes)}{gallery}</div>")


def mistakes_html(scored, per_head: int | None = None) -> str:
    """The report's section body for an :class:`attrfit.evaluation.scoring.Scored` (its ``images`` give thumbnails)."""
    schema = scored.schema
    per_head = per_head_budget(len(schema.heads)) if per_head is None else per_head
    images = getattr(scored, "images", None)
    predicted = getattr(scored, "predicted", lambda j: None)
    parts = [head_section(h, schema.classes[h], scored.probs[j], scored.labels[:, j], scored.paths, images, per_head,
                          predicted(j)) for j, h in enumerate(schema.heads)]
    return "\n".join(parts)


CSS = """
.mistakes h3 { margin: 1.2em 0 .3em; font-size: 1.05em; }
table.confused { font-size: .9em; }
.gallery { display: flex; flex-wrap: wrap; gap: .5em; }
.card { width: 112px; font-size: .75em; line-height: 1.25; color: #333; overflow-wrap: anywhere; }
.card img { display: block; max-width: 104px; max-height: 104px; border: 1px solid #ccc; image-rendering: auto; }
.card .noimg { width: 96px; height: 48px; background: #eee; color: #888; text-align: center; }
"""
