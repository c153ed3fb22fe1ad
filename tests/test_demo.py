"""The demo dataset: schema, determinism, class frequencies, and that each attribute
leaves a real trace in the pixels (checked on pairs of images that share one scene and
differ in a single label, so a missing or misplaced trace fails)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attrfit.data.demo import CSV_COLUMNS, MAX_LABEL_NOISE, add_label_noise, make_demo, sample_labels
from attrfit.data.demo_painter import place, render_person
from attrfit.data.demo_scene import HEAD_COLUMNS, REFERENCE_COUNTS, sample_scene
from attrfit.core.errors import AttrfitError

CLASSES = {head: list(REFERENCE_COUNTS[head]) for head in HEAD_COLUMNS}
# male, Good, 25-35, normal-healthy, None, Normal, Neutral, Front-Frontish
BASE = {"gender": "male", "imagequality": "Good", "age": "25-35", "weight": "normal-healthy", "carryingbag": "None",
        "footwear": "Normal", "emotion": "Neutral", "bodypose": "Front-Frontish"}


def _classes(**overrides: str) -> list[int]:
    lab = {**BASE, **overrides}
    return [CLASSES[head].index(lab[head]) for head in HEAD_COLUMNS]


def _render(seed: int, size: tuple[int, int] = (64, 64), **overrides: str) -> np.ndarray:
    """(H, W, 3) float array of one person; the same seed gives the same scene."""
    img = render_person(_classes(**overrides), np.random.default_rng([seed, 99]), size)
    return np.asarray(img, dtype=np.float64)


def _body(seed: int, size: tuple[int, int] = (64, 64), **overrides: str):
    scene = sample_scene(np.random.default_rng([seed, 99]))  # the same draws render_person makes first
    return place(scene, {**BASE, **overrides}, *size)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def demo40(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo(tmp_path_factory.mktemp("demo") / "d", n=40, size=(64, 64), workers=2)


# ---------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------


def test_reference_counts_match_the_readme_totals():
    assert list(REFERENCE_COUNTS) == HEAD_COLUMNS
    for head, counts in REFERENCE_COUNTS.items():
        assert sum(counts.values()) == 13573, head  # every head labels all 13,573 rows
    assert REFERENCE_COUNTS["carryingbag"]["Daily/Office/Work Bag"] == 4603
    assert REFERENCE_COUNTS["age"]["55+"] == 743


def test_csv_columns_class_names_and_images(demo40: Path):
    with open(demo40, newline="", encoding="utf-8") as f:
        assert next(csv.reader(f)) == CSV_COLUMNS
    rows = _read_csv(demo40)
    assert len(rows) == 40
    for i, row in enumerate(rows, start=1):
        for head in HEAD_COLUMNS:
            assert row[head] in REFERENCE_COUNTS[head]
        assert row["image_path"] == f"resized/{i}.jpg"
        assert row["filename"].startswith("images/") and row["filename"] != row["image_path"]
    with Image.open(demo40.parent / "resized" / "40.jpg") as img:
        assert img.format == "JPEG" and img.mode == "RGB" and img.size == (64, 64)
    # names with '/' and spaces round-trip through the csv module
    names = {row["carryingbag"] for row in rows} | {row["emotion"] for row in rows}
    assert any("/" in name for name in names)


def test_non_square_size_is_height_width(tmp_path: Path):
    make_demo(tmp_path, n=10, size=(48, 32), workers=1)
    with Image.open(tmp_path / "resized" / "3.jpg") as img:
        assert img.size == (32, 48)  # PIL reports (W, H)


def test_zero_label_noise_writes_the_sampled_labels(tmp_path: Path):
    rows = _read_csv(make_demo(tmp_path, n=30, size=(32, 32), label_noise=0.0))
    expected = sample_labels(30, seed=0)
    got = np.array([[CLASSES[h].index(row[h]) for h in HEAD_COLUMNS] for row in rows])
    assert (got == expected).all()


# ---------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------


def test_same_seed_same_bytes_whatever_the_workers(tmp_path: Path):
    a = make_demo(tmp_path / "a", n=40, size=(64, 64), seed=3, workers=1)
    b = make_demo(tmp_path / "b", n=40, size=(64, 64), seed=3, workers=3)
    c = make_demo(tmp_path / "c", n=40, size=(64, 64), seed=4, workers=2)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    for i in (1, 17, 40):
        image = f"resized/{i}.jpg"
        assert (a.parent / image).read_bytes() == (b.parent / image).read_bytes()
        assert (a.parent / image).read_bytes() != (c.parent / image).read_bytes()


def test_sample_labels_is_prefix_stable():
    assert (sample_labels(40, seed=5) == sample_labels(2000, seed=5)[:40]).all()


# ---------------------------------------------------------------------------------------
# Frequencies and label noise
# ---------------------------------------------------------------------------------------


def _shares(labels: np.ndarray, k: int, head: str) -> np.ndarray:
    return np.bincount(labels[:, k], minlength=len(CLASSES[head])) / len(labels)


def _reference_shares(head: str) -> np.ndarray:
    counts = np.array(list(REFERENCE_COUNTS[head].values()), dtype=np.float64)
    return counts / counts.sum()


def test_class_frequencies_follow_the_reference():
    labels = sample_labels(2000, seed=0)
    for k, head in enumerate(HEAD_COLUMNS):
        got, expected = _shares(labels, k, head), _reference_shares(head)
        assert np.abs(got - expected).max() < 0.04, (head, got.round(3), expected.round(3))
        assert got.argmax() == 0, head  # the same majority class as the real data


@pytest.mark.parametrize("rate", [0.05, MAX_LABEL_NOISE])
def test_written_labels_keep_the_reference_frequencies_after_noise(rate: float):
    written = add_label_noise(sample_labels(20000, seed=2, label_noise=rate), rate, seed=2)
    for k, head in enumerate(HEAD_COLUMNS):
        got, expected = _shares(written, k, head), _reference_shares(head)
        assert np.abs(got - expected).max() < 0.015, (head, rate, got.round(3), expected.round(3))
    assert sample_labels(50, seed=2, label_noise=rate).shape == (50, len(HEAD_COLUMNS))


def test_label_noise_flips_the_given_share_to_other_classes():
    labels = sample_labels(5000, seed=1)
    noisy = add_label_noise(labels, 0.1, seed=1)
    changed = (noisy != labels).mean(axis=0)
    assert np.all(np.abs(changed - 0.1) < 0.02), changed
    n_classes = np.array([len(CLASSES[h]) for h in HEAD_COLUMNS])
    assert (noisy >= 0).all() and (noisy < n_classes).all()
    assert (add_label_noise(labels, 0.0, seed=1) == labels).all()


# ---------------------------------------------------------------------------------------
# Each attribute leaves a trace
# ---------------------------------------------------------------------------------------

SEEDS = range(12)


def _run_at(img: np.ndarray, x: float, y: float, tol: float = 40.0) -> int:
    """Length of the horizontal run of pixels around (x, y) with the colour found there."""
    row, x = img[int(y)], int(x)
    close = np.abs(row - row[x]).max(axis=1) < tol
    left, right = x, x
    while left > 0 and close[left - 1]:
        left -= 1
    while right < len(row) - 1 and close[right + 1]:
        right += 1
    return right - left + 1


def test_weight_is_body_width():
    widths = {w: [] for w in ("underweight", "normal-healthy", "over-weight")}
    for seed in SEEDS:
        for weight in widths:
            body = _body(seed, (128, 128), weight=weight)
            img = _render(seed, (128, 128), weight=weight)
            widths[weight].append(_run_at(img, body.cx, body.y(0.505)))  # waist, between buttons
    med = {w: np.median(v) for w, v in widths.items()}
    assert med["underweight"] < med["normal-healthy"] < med["over-weight"], med
    assert med["over-weight"] > 1.6 * med["underweight"], med


def test_footwear_trace_is_at_the_feet():
    for seed in SEEDS:
        body = _body(seed)
        rows = slice(int(body.y(0.88)), min(64, int(body.y(1.0)) + 2))
        cols = slice(max(0, int(body.cx - 0.2 * body.u)), int(body.cx + 0.2 * body.u) + 1)
        above = slice(0, int(body.y(0.8)))
        normal, fancy, cantsee = _render(seed), _render(seed, footwear="Fancy"), _render(seed, footwear="CantSee")
        assert np.abs(fancy - normal)[rows, cols].mean() > 10
        assert np.abs(fancy - normal)[above].max() == 0  # the shoe change touches nothing else
        assert np.abs(cantsee - normal)[rows, cols].mean() > 20  # feet hidden or out of frame


def test_bad_image_quality_has_less_high_frequency_energy():
    def laplacian_var(img: np.ndarray) -> float:
        small = np.asarray(Image.fromarray(img.astype(np.uint8)).resize((64, 64), Image.BILINEAR), dtype=np.float64)
        g = small.mean(axis=2)  # the training-size view
        lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
        return float(lap.var())

    good = np.array([laplacian_var(_render(s, (128, 128))) for s in SEEDS])
    average = np.array([laplacian_var(_render(s, (128, 128), imagequality="Average")) for s in SEEDS])
    bad = np.array([laplacian_var(_render(s, (128, 128), imagequality="Bad")) for s in SEEDS])
    assert (bad < good).all(), (bad, good)
    assert np.median(good / bad) > 3
    assert np.median(average) < np.median(good)


def test_hair_goes_grey_with_age():
    def crown(seed: int, age: str) -> np.ndarray:  # top of the head: hair in every pose
        body = _body(seed, age=age)
        return _render(seed, age=age)[int(body.y(0.03)), int(body.cx)]

    old = np.array([crown(seed, "55+") for seed in SEEDS])  # (seeds, RGB)
    young = np.array([crown(seed, "15-25") for seed in SEEDS])
    assert old.mean() > young.mean() + 40
    assert np.ptp(old, axis=1).mean() < np.ptp(young, axis=1).mean() + 5  # grey: channels close together


def test_emotion_trace_is_in_the_face_and_back_view_hides_it():
    for seed in SEEDS:
        body = _body(seed, (128, 128))
        neutral = _render(seed, (128, 128))
        face = slice(int(body.y(0.0)), int(body.y(0.30)))  # the face, plus the blur of its edge
        for emotion in ("Happy", "Sad", "Angry/Serious"):
            diff = np.abs(_render(seed, (128, 128), emotion=emotion) - neutral)
            assert diff[face].sum() > 0 and diff[face.stop:].max() == 0, emotion
        back = _render(seed, (128, 128), bodypose="Back")
        assert (_render(seed, (128, 128), bodypose="Back", emotion="Happy") == back).all()


def test_bag_is_beside_the_body():
    for seed in SEEDS:
        body = _body(seed)
        none = _render(seed)
        for bag in ("Daily/Office/Work Bag", "Grocery/Home/Plastic Bag"):
            diff = np.abs(_render(seed, carryingbag=bag) - none).max(axis=2) > 30
            assert diff.sum() > 20, bag
            outside = np.abs(np.arange(64) - body.cx) > body.chest
            assert diff[:, outside].sum() > 0.5 * diff.sum(), bag


# ---------------------------------------------------------------------------------------
# Arguments and the output folder
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": 5}, "n must be"),
        ({"size": (8, 64)}, "size must be"),
        ({"size": 64}, "size must be"),
        ({"label_noise": 0.2}, "label_noise"),
        ({"workers": 0}, "workers"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path: Path, kwargs: dict, message: str):
    with pytest.raises(AttrfitError, match=message) as err:
        make_demo(tmp_path, **kwargs)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "annotations.csv").exists()


def test_existing_dataset_is_not_overwritten_without_force(tmp_path: Path, capsys: pytest.CaptureFixture):
    make_demo(tmp_path, n=10, size=(32, 32), seed=1)
    before = (tmp_path / "annotations.csv").read_bytes()
    with pytest.raises(AttrfitError, match="already exists.*another folder"):
        make_demo(tmp_path, n=10, size=(32, 32), seed=2)
    assert (tmp_path / "annotations.csv").read_bytes() == before
    make_demo(tmp_path, n=10, size=(32, 32), seed=2, force=True, progress=True)
    assert (tmp_path / "annotations.csv").read_bytes() != before
    assert not list(tmp_path.glob("*.tmp"))
    assert capsys.readouterr().out == ""  # progress goes to stderr, never stdout
