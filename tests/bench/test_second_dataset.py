"""bench/second_dataset.py: the fashion-product snapshot -> labels CSV, images, split.

The rules (rare classes become missing labels, unlabelled rows dropped, byte-identical photos
grouped) are checked on hand-made tables; the whole conversion on a tiny generated git
snapshot with the real layout (data/images/<id>.jpg + data/products.parquet). The snapshot's
table is JSON there, read by a stand-in for ``read_table``, so the conversion is tested without
pyarrow; the Parquet reading itself is tested where pyarrow (the ``fashion`` extra) is installed.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attrfit.core.errors import AttrfitError

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_second_dataset", ROOT / "bench" / "second_dataset.py")
sd = sys.modules["bench_second_dataset"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sd)


def table(rows: dict[int, str]) -> dict[str, list]:
    return {"product_id": [str(k) for k in rows], "description": list(rows.values())}


def test_description_fields_and_refusal():
    assert sd.parse_description("Footwear - Shoes - Casual Shoes - Off White - Casual") == (
        "Footwear", "Casual Shoes", "Off White", "Casual")
    with pytest.raises(AttrfitError, match="4 fields"):
        sd.parse_description("Apparel - Topwear - Shirts - Casual")


def test_rare_classes_become_missing_and_unlabelled_rows_are_dropped():
    rows = {i: "Apparel - Topwear - Shirts - Blue - Casual" for i in range(1, 9)}
    rows[9] = "Footwear - Shoes - Heels - Blue - Casual"  # rare category and article, common colour/usage
    rows[10] = "Home - Home Furnishing - Cushion Covers - Teal - Home"  # rare in every head
    rows[11] = "Apparel - Topwear - Shirts - Blue - Casual"  # no photo in the snapshot
    blobs = {i: f"b{i}" for i in range(1, 11)}
    prep = sd.prepare(table(rows), blobs, min_share=0.15)  # floor 1.5 of the 10 rows with a photo
    assert [p.id for p in prep.products] == list(range(1, 10))
    assert prep.products[-1].labels == ("", "", "Blue", "Casual")
    assert prep.kept == {"category": ["Apparel"], "article": ["Shirts"], "colour": ["Blue"], "usage": ["Casual"]}
    assert prep.emptied == {"category": 2, "article": 2, "colour": 1, "usage": 1}
    assert (prep.no_image, prep.no_label) == (1, 1)
    with pytest.raises(AttrfitError, match="twice"):
        sd.prepare({"product_id": ["1", "1"], "description": [rows[1]] * 2}, blobs, 0.0)


def test_identical_photos_share_a_group_named_by_the_smallest_id():
    assert sd.photo_groups({30: "x", 12: "y", 20: "x", 40: "x"}) == {12: 12, 20: 20, 30: 20, 40: 20}


# ---------------------------------------------------------------- the whole conversion on a tiny snapshot

ARTICLES = [("Apparel", "Topwear", "Tshirts"), ("Footwear", "Shoes", "Heels"), ("Accessories", "Bags", "Handbags")]
COLOURS = ["Black", "White"]


def jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 6, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture
def json_table(monkeypatch):
    """The snapshot's product table is JSON in these tests: read it without pyarrow."""
    monkeypatch.setattr(sd, "read_table", lambda data: json.loads(data))


def make_snapshot(tmp_path: Path, n: int = 40) -> tuple[Path, str]:
    """A git directory holding data/images/<id>.jpg and data/products.parquet (ids 100..; JSON inside)."""
    work = tmp_path / "work"
    (work / "data" / "images").mkdir(parents=True)
    ids = list(range(100, 100 + n))
    for i in ids:
        (work / "data" / "images" / f"{i}.jpg").write_bytes(jpeg(101 if i == 103 else i))  # 103 reuses 101's photo
    desc = [" - ".join([*ARTICLES[i % 3], COLOURS[i % 2], "Sports" if i % 5 == 0 else "Casual"]) for i in ids]
    desc[-1] = "Home - Home Furnishing - Cushion Covers - Teal - Home"  # rare everywhere: dropped
    (work / "data" / "products.parquet").write_text(json.dumps({"product_id": [str(i) for i in ids],
                                                                 "description": desc}))
    git = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "snapshot"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    return work / ".git", commit


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_conversion_writes_images_csv_split_and_is_repeatable(tmp_path, json_table):
    git_dir, commit = make_snapshot(tmp_path)
    out = tmp_path / "out"
    args = [str(git_dir), "--out", str(out), "--commit", commit, "--min-share", "0.05"]
    assert sd.main(args) == 0
    rows = read_csv(out / "labels.csv")
    assert [r["image_path"] for r in rows] == [f"images/{i}.jpg" for i in range(100, 139)]  # 139 dropped
    assert list(rows[0]) == ["image_path", "category", "article", "colour", "usage", "image_group"]
    assert rows[1] == {"image_path": "images/101.jpg", "category": "Accessories", "article": "Handbags",
                       "colour": "White", "usage": "Casual", "image_group": "101"}
    assert rows[3]["image_group"] == "101" and rows[2]["image_group"] == "102"
    assert (out / "images" / "103.jpg").read_bytes() == jpeg(101)
    assert len(list((out / "images").iterdir())) == 39
    split = json.loads((out / "labels.split.json").read_text())
    assert split["group_column"] == "image_group"
    summary = json.loads((out / "dataset.json").read_text())
    assert summary["rows"] == 39 and summary["no_label"] == 1 and summary["groups"] == 38
    assert summary["heads"]["usage"]["classes"] == {"Casual": 31, "Sports": 8}
    assert summary["heads"]["usage"]["majority_rate"] == round(31 / 39, 4)

    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(AttrfitError, match="already exists"):
        sd.main(args)
    assert sd.main([*args, "--force"]) == 0
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    for name in ("labels.csv", "labels.split.json"):
        assert after[name] == before[name], name
    assert json.loads(after["dataset.json"])["images_written"] == 0  # the photos were already there


def test_a_snapshot_without_the_commit_is_refused_in_one_line(tmp_path, json_table):
    git_dir, _ = make_snapshot(tmp_path, n=4)
    with pytest.raises(AttrfitError, match="has no commit 0000000"):
        sd.main([str(git_dir), "--out", str(tmp_path / "out"), "--commit", "0" * 40])
    with pytest.raises(AttrfitError, match="not a git directory"):
        sd.main([str(tmp_path), "--out", str(tmp_path / "out2")])


def test_the_product_table_is_read_from_parquet(tmp_path):
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    buf = io.BytesIO()
    pq.write_table(pa.table({"product_id": ["7", "3"], "description": ["a - b - c - d - e", "f - g - h - i - j"],
                             "price": [1.5, 2.0]}), buf)
    t = sd.read_table(buf.getvalue())
    assert t["product_id"] == ["7", "3"] and t["description"][1] == "f - g - h - i - j"


def test_without_pyarrow_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(AttrfitError, match=r"\[fashion\]"):
        sd.read_table(b"")
