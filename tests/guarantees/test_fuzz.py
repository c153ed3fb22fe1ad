"""Property tests: random CSV tables and random bytes as images never crash the data path.

The table, split and cache layers may only refuse input with :class:`AttrfitError`
(``BadImage`` inside ``decode_image``); any other exception is a bug that would reach the
user as a traceback.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from attrfit.data.cache import BadImage, decode_image, load_or_build
from attrfit.core.errors import AttrfitError
from attrfit.data.split import SIDES, load_split, make_split, save_split, verify_split
from attrfit.data.table import read_table

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL")  # "Corrupt EXIF data" and such: expected here

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A fresh folder per example (hypothesis runs many examples in one test call)."""
    return lambda: tmp_path_factory.mktemp("fuzz")


# ---------------------------------------------------------------- CSV tables

CELL_CHARS = st.sampled_from(list("abAB01 ,\"'\r\n\t;/+-é\ufeff\x00") + ["img/", ".png", "\u2028"])
cells = st.lists(CELL_CHARS, max_size=6).map("".join)
column_names = st.one_of(st.sampled_from(["image_path", "color", "bright", "pid", "filename", ""]), cells)


@st.composite
def csv_texts(draw) -> tuple[bytes, list[str]]:
    """A header (usually with image_path) and rows of random width: the mistakes people make in CSVs."""
    header = draw(st.lists(column_names, min_size=1, max_size=5))
    if draw(st.booleans()):
        header = ["image_path", *header]
    rows = draw(st.lists(st.lists(st.one_of(cells, st.sampled_from(["a", "b", "x", ""])), min_size=len(header) - 1,
                                  max_size=len(header) + 1), max_size=12))
    quote = draw(st.booleans())
    text = "\n".join(",".join(f'"{c}"' if quote else c for c in r) for r in [header, *rows])
    text = (draw(st.sampled_from(["", "\ufeff"])) + text.replace("\n", draw(st.sampled_from(["\n", "\r\n"]))))
    encoding = draw(st.sampled_from(["utf-8", "latin-1", "utf-16"]))
    return text.encode(encoding, errors="replace"), header


@FUZZ
@given(csv_texts(), st.data())
def test_random_csv_tables(scratch, case, data):
    raw, header = case
    root = scratch()
    path = root / "l.csv"
    path.write_bytes(raw)
    opts = {
        "heads": data.draw(st.none() | st.lists(st.sampled_from(header), max_size=2)),
        "ignore_columns": data.draw(st.none() | st.lists(column_names, max_size=2)),
        "group_column": data.draw(st.none() | st.sampled_from(header)),
    }
    try:
        table = read_table(path, check_files=data.draw(st.booleans()), **opts)
    except AttrfitError:
        return
    assert table.labels.shape == (len(table), len(table.schema.heads))
    split_and_verify(table, data, root)


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_as_csv(scratch, raw):
    path = scratch() / "l.csv"
    path.write_bytes(raw)
    try:
        read_table(path, check_files=False)
    except AttrfitError:
        pass


# ---------------------------------------------------------------- splits of random tables

@st.composite
def table_csvs(draw) -> tuple[str, bool]:
    """A valid CSV: n rows, 1-2 heads with 2-3 classes and missing labels, maybe a group column 'g'."""
    n = draw(st.integers(2, 30))
    heads = draw(st.lists(st.sampled_from(["h1", "h2"]), min_size=1, max_size=2, unique=True))
    grouped = draw(st.booleans())
    lines = [",".join(["image_path", *heads] + (["g"] if grouped else []))]
    for i in range(n):
        labels = [draw(st.sampled_from(["a", "b", "c", ""])) for _ in heads]
        group = [f"p{draw(st.integers(0, 5))}"] if grouped else []
        lines.append(",".join([f"{i}.png", *labels, *group]))
    return "\n".join(lines) + "\n", grouped


def read_valid(case: tuple[str, bool], root: Path):
    text, grouped = case
    (root / "l.csv").write_text(text)
    try:
        return read_table(root / "l.csv", group_column="g" if grouped else None, check_files=False)
    except AttrfitError:  # e.g. a head drawn with one class
        assume(False)


def split_and_verify(table, data, root: Path) -> None:
    """make_split may refuse; a split it makes covers every row once and survives a save/load round trip."""
    try:
        split = make_split(table, data.draw(st.floats(-0.2, 1.2)), data.draw(st.floats(-0.2, 1.2)),
                           data.draw(st.integers(0, 3)), data.draw(st.none() | st.sampled_from(["h1", "color", "x"])))
    except AttrfitError:
        return
    rows = verify_split(split, table)
    assert sorted(np.concatenate([rows[s] for s in SIDES]).tolist()) == list(range(len(table)))
    path = save_split(split, root / "s.json", force=True)
    assert verify_split(load_split(path), table).keys() == rows.keys()


@FUZZ
@given(table_csvs(), st.data())
def test_random_tables_split_and_verify(scratch, case, data):
    root = scratch()
    split_and_verify(read_valid(case, root), data, root)


EDITS = {
    "move": lambda d, r: d["sides"][r.choice(SIDES)].append(d["sides"]["train"].pop()) if d["sides"]["train"] else None,
    "drop": lambda d, r: d["sides"]["train"].pop() if d["sides"]["train"] else None,
    "unknown": lambda d, r: d["sides"]["test"].append("nope.png"),
    "dup": lambda d, r: d["sides"]["val"].extend(d["sides"]["train"][:1]),
    "type": lambda d, r: d["sides"].update(test=[1]),
    "no_sides": lambda d, r: d.pop("sides"),
    "fingerprint": lambda d, r: d.update(fingerprint=None),
    "schema": lambda d, r: d.update(schema={"heads": ["zz"]}),
    "digests": lambda d, r: d.update(row_digests={}),
}


@FUZZ
@given(table_csvs(), st.lists(st.sampled_from(sorted(EDITS)), min_size=1, max_size=3, unique=True), st.randoms())
def test_hand_edited_splits_are_refused_or_consistent(scratch, case, edits, rnd):
    root = scratch()
    table = read_valid(case, root)
    try:
        d = make_split(table, 0.3, 0.2, seed=0).to_dict()
    except AttrfitError:  # too few rows or groups for a test or val side
        assume(False)
    for e in sorted(edits, key=lambda e: e == "no_sides"):  # the other edits need the sides
        EDITS[e](d, rnd)
    path = root / "edited.json"
    path.write_text(json.dumps(d))
    try:
        rows = verify_split(load_split(path), table, path)
    except AttrfitError:
        return
    # accepted: then it still assigns every row to exactly one side
    assert sorted(np.concatenate([rows[s] for s in SIDES]).tolist()) == list(range(len(table)))


# ---------------------------------------------------------------- random bytes as images

def _valid_images() -> list[bytes]:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)
    out = []
    for fmt, im in [("PNG", Image.fromarray(a)), ("JPEG", Image.fromarray(a)), ("GIF", Image.fromarray(a).convert("P")),
                    ("BMP", Image.fromarray(a)), ("TIFF", Image.fromarray(a)), ("WEBP", Image.fromarray(a)),
                    ("PNG", Image.fromarray(a[..., 0].astype(np.uint16) * 200)),
                    ("PNG", Image.fromarray(np.dstack([a, a[..., :1]]), "RGBA"))]:
        buf = io.BytesIO()
        try:
            im.save(buf, format=fmt)
        except (OSError, KeyError):  # format not built into this Pillow
            continue
        out.append(buf.getvalue())
    return out


VALID = _valid_images()


@st.composite
def image_bytes(draw) -> bytes:
    """Pure noise, or a real PNG/JPEG/GIF/BMP/TIFF/WebP with bytes flipped, cut off or inserted."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    b = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "cut", "insert"]))
        i = draw(st.integers(0, len(b) - 1)) if b else 0
        if kind == "flip" and b:
            b[i] = draw(st.integers(0, 255))
        elif kind == "cut":
            b = b[:i]
        else:
            b[i:i] = draw(st.binary(min_size=1, max_size=8))
    return bytes(b)


@FUZZ
@given(image_bytes(), st.integers(8, 24), st.integers(8, 24), st.sampled_from(["stretch", "pad"]))
def test_random_bytes_decode_or_bad_image(scratch, raw, h, w, resize):
    path = scratch() / "x.img"
    path.write_bytes(raw)
    try:
        a = decode_image(path, (h, w), resize)
    except BadImage:
        return
    assert a.shape == (h, w, 3) and a.dtype == np.uint8


@settings(max_examples=15, deadline=None)
@given(st.lists(image_bytes(), min_size=1, max_size=4), st.booleans())
def test_random_files_into_the_cache(scratch, files, skip_bad):
    root = scratch()
    paths = [f"{i}.png" for i in range(len(files))]
    for p, raw in zip(paths, files):
        (root / p).write_bytes(raw)
    try:
        cache = load_or_build(paths, [root / p for p in paths], (8, 8), "stretch", root / "cache", skip_bad,
                              workers=1, progress=False)
    except AttrfitError:
        assert not skip_bad
        return
    assert cache.images.shape == (len(cache.paths), 3, 8, 8)
    assert len(cache.paths) + len(cache.bad) == len(paths)


@pytest.mark.parametrize("raw", VALID[:2])
def test_fuzz_inputs_include_decodable_images(tmp_path, raw):
    """The mutation fuzzer starts from images that really decode (else it only tests noise)."""
    (tmp_path / "x").write_bytes(raw)
    assert decode_image(tmp_path / "x", (8, 8)).shape == (8, 8, 3)
