"""The mistakes section: confident errors, most confused pairs, thumbnails, and the report that shows them."""

import base64
import io
import re

import numpy as np
import pytest
import torch
from helpers import trained_tiny_report_run
from PIL import Image

from attrfit.evaluation import mistakes, report
from attrfit.evaluation.scoring import Scored, score_checkpoint
from attrfit.data.schema import Schema

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return trained_tiny_report_run(tmp_path_factory.mktemp("mistakes"))


def thumbnails(page: str) -> list[bytes]:
    uris = re.findall(r'<div class="card"><img src="data:image/jpeg;base64,([^"]*)"', page)
    return [base64.b64decode(u, validate=True) for u in uris]


# ---------------------------------------------------------------- pure choices

def test_confident_errors_are_the_wrong_labelled_rows_by_confidence():
    probs = np.array([[0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.05, 0.9, 0.05], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7],
                      [0.98, 0.01, 0.01]])
    target = np.array([1, 2, 0, 1, 0, -1])  # rows 1 and 3 right, row 5 unlabelled (its 0.98 must not count)
    got = mistakes.confident_errors(probs, target, top=10)
    assert [(m.row, m.true, m.pred) for m in got] == [(2, 0, 1), (4, 0, 2), (0, 1, 0)]
    assert [m.prob for m in got] == [0.9, 0.7, 0.6]
    assert [m.prob_true for m in got] == [0.05, 0.1, 0.3]
    assert [m.row for m in mistakes.confident_errors(probs, target, top=2)] == [2, 4]
    assert mistakes.confident_errors(probs, target, top=0) == []
    assert mistakes.confident_errors(probs[:0], target[:0], top=3) == []


def test_most_confused_counts_off_diagonal_pairs_largest_first():
    target = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, -1, -1])
    pred = np.array([1, 1, 1, 0, 0, 1, 0, 1, 2, 2, 2])  # the unlabelled rows' 2s are not confusions
    pairs = mistakes.most_confused(pred, target, 3)
    assert [(c.true, c.pred, c.count) for c in pairs] == [(0, 1, 3), (1, 0, 1), (2, 0, 1), (2, 1, 1)]
    assert pairs[0].share == 0.75 and pairs[2].share == pytest.approx(1 / 3)
    assert len(mistakes.most_confused(pred, target, 3, top=2)) == 2
    assert mistakes.most_confused(target.clip(0), target, 3) == []  # no error, no pair


def test_the_page_stays_bounded_for_any_number_of_heads():
    assert mistakes.per_head_budget(1) == mistakes.PER_HEAD
    for n in (8, 35, 100, 5000):
        assert n * mistakes.per_head_budget(n) <= max(mistakes.MAX_THUMBNAILS, n * mistakes.MIN_PER_HEAD)
    assert mistakes.per_head_budget(35) * 35 <= mistakes.MAX_THUMBNAILS


def test_thumbnails_are_small_jpegs_of_the_image():
    img = torch.zeros(3, 224, 112, dtype=torch.uint8)
    img[0] = 200  # red
    data = mistakes.thumbnail(img)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG" and im.size == (48, 96)  # W x H, longer side THUMB_SIDE, aspect kept
        r, g, b = im.convert("RGB").getpixel((20, 40))
    assert r > 180 and g < 30 and b < 30
    small = torch.full((3, 16, 16), 90, dtype=torch.uint8)
    with Image.open(io.BytesIO(mistakes.thumbnail(small))) as im:
        assert im.size == (16, 16)  # never enlarged


def test_head_section_escapes_names_and_shows_the_most_confident_mistake_first():
    classes = ("<b>", "a&b")
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8]], np.float32)
    target = np.array([1, 0, 1])
    imgs = torch.zeros(3, 3, 8, 8, dtype=torch.uint8)
    html = mistakes.head_section("h<x>", classes, probs, target, ["p0.png", "p1.png", "p2.png"], imgs, per_head=5)
    assert "<b>" not in html and "&lt;b&gt;" in html and "h&lt;x&gt;" in html
    assert "2 of 3 wrong" in html
    assert html.index('title="p0.png"') < html.index('title="p1.png"') and 'title="p2.png"' not in html
    assert len(thumbnails(html)) == 2
    assert "no image" in mistakes.head_section("h", classes, probs, target, ["a", "b", "c"], None, 5)


# ---------------------------------------------------------------- in the report

def test_report_shows_each_heads_confident_mistakes_with_thumbnails(tiny_run):
    page = (tiny_run / "report.html").read_text(encoding="utf-8")  # written by train (its Scored has the images)
    assert "<h2>Mistakes (test side)</h2>" in page
    scored = score_checkpoint(str(tiny_run), side="test", progress=False)
    expected = 0
    for j, h in enumerate(scored.schema.heads):
        target = scored.labels[:, j]
        wrong = int(((target >= 0) & (scored.probs[j].argmax(1) != target)).sum())
        assert f"{h}: {wrong} of {int((target >= 0).sum())} wrong" in page
        expected += min(wrong, mistakes.per_head_budget(len(scored.schema.heads)))
    shown = thumbnails(page)
    assert len(shown) == expected > 0  # a 2-epoch tiny model makes mistakes
    first = mistakes.confident_errors(scored.probs[0], scored.labels[:, 0], 1)[0]
    with Image.open(io.BytesIO(shown[0])) as im:  # the first card is that image, from the cache
        got = np.asarray(im.convert("RGB"), dtype=np.float64)
    want = scored.images[first.row].permute(1, 2, 0).numpy().astype(np.float64)
    assert np.abs(got - want).mean() < 12  # JPEG, not bit exact
    assert f'title="{scored.paths[first.row]}"' in page


def test_report_page_stays_small_for_many_heads(tiny_run):
    """40 heads of many classes over many images: thumbnails capped, so the page stays a few hundred KB."""
    n, heads = 3000, tuple(f"h{i}" for i in range(40))
    rng = np.random.default_rng(0)
    schema = Schema(heads, {h: tuple(f"c{k}" for k in range(30)) for h in heads})
    probs = [rng.dirichlet(np.ones(30), n).astype(np.float32) for _ in heads]
    labels = rng.integers(0, 30, (n, len(heads)))
    images = torch.from_numpy(rng.integers(0, 255, (n, 3, 128, 64), dtype=np.uint8))
    scored = Scored({}, probs, labels, [f"img/{i}.jpg" for i in range(n)], schema, {}, images)
    html = mistakes.mistakes_html(scored)
    assert len(thumbnails(html)) == 40 * mistakes.per_head_budget(40) <= mistakes.MAX_THUMBNAILS
    assert html.count("<tr><td>") == 40 * mistakes.TOP_PAIRS
    assert len(html) < 2_000_000  # random noise is the worst case for JPEG


def test_report_without_images_still_lists_mistakes(tiny_run):
    scored = score_checkpoint(str(tiny_run), side="val", progress=False)
    scored.images = None  # e.g. a Scored made by older code
    page = report.make_report(tiny_run, side="val", scored=scored, n_boot=50).html
    assert "<h2>Mistakes (val side)</h2>" in page and "no image" in page
