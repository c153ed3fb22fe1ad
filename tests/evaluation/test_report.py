import base64
import re
import shutil

import numpy as np
import pytest
from helpers import trained_tiny_report_run
from PIL import Image

from attrfit import cli

from attrfit.evaluation import report
from attrfit.evaluation import bootstrap, figures, findings, report_page
from attrfit.core.errors import AttrfitError
from attrfit.evaluation.metrics import confusion_matrix
from attrfit.evaluation.results import HeadMetrics, MeanMetrics

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return trained_tiny_report_run(tmp_path_factory.mktemp("report"))


def images_of(page: str) -> list[str]:
    """The figures' images (the mistakes' thumbnails are not figures: tests/evaluation/test_mistakes.py)."""
    return re.findall(r'<figure[^>]*><img [^>]*src="([^"]*)"', page)


def decode(uri: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix), uri[:40]
    return base64.b64decode(uri[len(prefix):], validate=True)


# ---------------------------------------------------------------- the whole report of a real run

def test_train_writes_a_self_contained_report(tiny_run):
    page = (tiny_run / "report.html").read_text(encoding="utf-8")
    for head in ("color", "bright"):
        assert f"<td>{head}</td>" in page  # a row of the per-head table
    uris = images_of(page)
    # loss, accuracy, schedule, one confusion matrix per head and the reliability diagram (no LR range test here)
    assert len(uris) == 3 + 2 + 1
    pngs = [decode(u) for u in uris]
    assert all(p.startswith(PNG_MAGIC) for p in pngs)
    # the same figures lie beside the HTML, and nothing in the page points anywhere else
    files = sorted((tiny_run / "report_files").iterdir())
    assert sorted(f.read_bytes() for f in files) == sorted(pngs)
    assert re.findall(r'(?:src|href)="(?!data:)', page) == []
    assert "Warnings (" in page or "No warnings" in page
    for section in ("Per-head results", "Decision rules", "Calibration", "Training", "Confusion matrices", "Data",
                    "Split", "Run", "Config"):
        assert f"<h2>{section}" in page


def test_lr_find_plot_is_embedded_when_present(tiny_run, tmp_path):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    (run / "lr_find").mkdir()
    Image.new("RGB", (40, 30), "red").save(run / "lr_find" / "lr_find.png")
    page = report.write_report(run).read_text(encoding="utf-8")
    pngs = [decode(u) for u in images_of(page)]
    assert len(pngs) == 7 and (run / "lr_find" / "lr_find.png").read_bytes() in pngs
    assert (run / "report_files" / "lr_find.png").is_file()


def test_cli_report_on_val_side(tiny_run, capsys):
    assert cli.main(["report", str(tiny_run), "--side", "val", "--quiet"]) == 0
    out = capsys.readouterr().out
    path = tiny_run / "report_val.html"
    assert f"report: {path}" in out
    page = path.read_text(encoding="utf-8")
    assert "val side" in page and len(list((tiny_run / "report_val_files").glob("*.png"))) == 6


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(AttrfitError, match="not a run folder"):
        report.write_report(tmp_path)


# ---------------------------------------------------------------- intervals

def noisy_predictor(n: int, accuracy: float, k: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    target = rng.choice(k, size=n, p=[0.5, 0.3, 0.2][:k] if k == 3 else None)
    wrong = (target + rng.integers(1, k, n)) % k
    pred = np.where(rng.random(n) < accuracy, target, wrong)
    return np.eye(k)[pred], target


def test_intervals_contain_the_estimate_and_narrow_with_n():
    widths = []
    for n in (100, 1000, 10000):
        probs, target = noisy_predictor(n, 0.8)
        r = findings.head_row("h", probs, target, ("a", "b", "c"), majority=0, n_boot=500)
        for value, (lo, hi) in ((r.accuracy, r.accuracy_ci), (r.balanced_accuracy, r.balanced_accuracy_ci),
                                (r.gain, r.gain_ci)):
            assert lo <= value <= hi
        widths.append([hi - lo for lo, hi in (r.accuracy_ci, r.balanced_accuracy_ci, r.gain_ci)])
    widths = np.array(widths)
    assert (widths[1:] < widths[:-1]).all(), widths
    assert widths[-1].max() < 0.05


def test_gain_interval_skips_missing_and_is_zero_for_the_majority_rule():
    target = np.array([0, 0, 0, 1, -1, -1] * 40)
    assert bootstrap.gain_ci(np.zeros(target.size, int), target, majority_class=0) == (0.0, 0.0)
    lo, hi = bootstrap.gain_ci(target.clip(0), target, majority_class=0)  # perfect on labelled rows
    assert 0 < lo <= 0.25 <= hi


# ---------------------------------------------------------------- warnings

def rows_for(probs, target, classes=("a", "b", "c")):
    return [findings.head_row("age", probs, target, classes, majority=0, n_boot=300)]


def test_collapse_warning_fires_on_a_constant_predictor_only():
    _, target = noisy_predictor(600, 0.9)
    constant = np.eye(3)[np.zeros(600, int)]
    warnings = findings.warnings_for(rows_for(constant, target), "test")
    assert len(warnings) == 1  # collapse, not repeated as 'near chance' and 'no gain'
    assert warnings[0].startswith("age: predicts 'a' for 100% of test images")
    assert "majority class" in warnings[0]
    good, target = noisy_predictor(600, 0.9)
    assert findings.warnings_for(rows_for(good, target), "test") == []


def test_chance_and_gain_warnings_fire_on_a_guessing_head():
    rng = np.random.default_rng(3)
    _, target = noisy_predictor(900, 0.9)
    guess = np.eye(3)[rng.integers(0, 3, 900)]
    warnings = findings.warnings_for(rows_for(guess, target), "test")
    assert any("cannot be told apart from chance (0.333 for 3 classes)" in w for w in warnings)
    assert any("is below always answering 'a'" in w for w in warnings)


def age(accuracy: float, n: int) -> dict[str, HeadMetrics]:
    return {"age": HeadMetrics.from_json({"accuracy": accuracy, "n": n})}


def test_val_much_better_than_test_warns_beyond_noise_only():
    test = age(0.70, 500)
    assert len(findings.val_test_warnings(age(0.80, 500), test)) == 1
    assert findings.val_test_warnings(age(0.72, 500), test) == []
    assert findings.val_test_warnings(age(0.80, 20), age(0.70, 20)) == []


def test_overfitting_warning():
    assert "overfitting" in findings.overfit_warnings({"age": 0.99}, {"age": 0.70}, 5)[0]
    assert findings.overfit_warnings({"age": 0.75}, {"age": 0.72}, 5) == []


def test_warnings_are_grouped_by_head_and_duplicates_come_first():
    _, target = noisy_predictor(300, 0.9)
    rng = np.random.default_rng(0)
    guess = np.eye(3)[rng.integers(0, 3, 300)]
    rows = [findings.head_row(h, guess, target, ("a", "b", "c"), 0, 200) for h in ("x", "y")]
    warnings = findings.warnings_for(rows, "test", duplicates=[["train", "1.png", "test", "2.png"]])
    assert warnings[0].startswith("split: 1 image(s) have byte-identical copies")
    heads = [w.split(":")[0] for w in warnings[1:]]
    assert heads == sorted(heads) and set(heads) == {"x", "y"}


# ---------------------------------------------------------------- user strings

def test_class_names_are_escaped_in_html_and_safe_in_figures():
    classes = ("<30", "Daily/Office/Work Bag", "$5 & up")
    probs, target = noisy_predictor(200, 0.7)
    rows = [findings.head_row("a<b", probs, target, classes, majority=0, n_boot=100)]
    table = report_page.metrics_table(rows, MeanMetrics(accuracy=0.7, balanced_accuracy=0.6, majority_accuracy=0.5,
                                                   macro_f1=0.6))
    assert "&lt;30" in table and "<30" not in table and "a&lt;b" in table
    page = report_page.warnings_html(["a<b: predicts '<30' for 99% of test images"], ("a<b",))
    assert "<b>a&lt;b</b>: predicts &#x27;&lt;30&#x27;" in page
    cm = confusion_matrix(probs.argmax(1), target, 3)
    assert figures.png_bytes(figures.confusion_figure(cm, classes, "a<b", "test")).startswith(PNG_MAGIC)
