"""A second real attribute dataset, not of pedestrians: catalogue photos of fashion products.

A recipe chosen on PETA is checked on data it was not tuned on (docs/experiments/second-dataset.md).
This script turns a fetched snapshot of a public GitHub repository into an attrfit labels CSV:

- source: ``github:tanmay0401/multimodal-recommendation-engine`` at commit ``COMMIT`` below. It
  holds ``data/images/<id>.jpg`` (44,072 product photos, 60x80 px JPEGs on white) and
  ``data/products.parquet``, whose ``description`` is "masterCategory - subCategory - articleType -
  baseColour - usage" of the Fashion Product Images (Small) dataset (P. Aggarwal, Kaggle; the
  Myntra catalogue), one row per image. Reading the Parquet file needs pyarrow (the ``fashion`` extra).
- heads: ``category`` (masterCategory), ``article`` (articleType), ``colour`` (baseColour) and
  ``usage``. subCategory is left out: it is a coarser copy of ``article``.
- rare classes: a class with fewer than ``--min-share`` (default 1%) of the images is too rare to
  learn or to measure (under ~66 test images at attrfit's 15% test side, so its recall moves
  balanced accuracy by chance); its cells are left EMPTY, which attrfit reads as a missing label
  (the loss and the metrics skip it), and the image keeps its other heads. A row left with no
  label at all is dropped. Nothing is merged: which shades or articles are "the same" is not
  the data's to say.
- group: ``image_group`` is the smallest product id among the images with byte-identical files
  (the catalogue reuses some photos under several ids); the split keeps each group on one side.
- output, outside the repository: ``OUT/images/<id>.jpg`` (the snapshot's bytes, unchanged),
  ``OUT/labels.csv`` (rows in id order), ``OUT/labels.split.json`` (``attrfit split
  --group-column image_group``, seed 0) and ``OUT/dataset.json`` (source, rule, counts). The same
  snapshot gives the same files, byte for byte.

Usage (the fetch tool brings the snapshot; no other network):
    fetch github:tanmay0401/multimodal-recommendation-engine
      -> /work/.mirror/tanmay0401+multimodal-recommendation-engine/repo
    .venv/bin/pip install -e '.[fashion]'
    .venv/bin/python bench/second_dataset.py /work/.mirror/tanmay0401+multimodal-recommendation-engine/repo
    .venv/bin/attrfit train /work/data/fashion-products/labels.csv --size 64x48 --budget 2m
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import shlex
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from attrfit.core import files
from attrfit.core.errors import AttrfitError
from attrfit.core.outputs import check_output_folder

SOURCE = "github:tanmay0401/multimodal-recommendation-engine"
COMMIT = "a86a10b3b5cc961819c7912124d0a86fe64c6f67"  # the snapshot this page's figures come from
PRODUCTS = "data/products.parquet"
IMAGES = "data/images"
DEFAULT_OUT = Path("/work/data/fashion-products")
# description field -> head (None: not a head)
FIELDS = ("category", None, "article", "colour", "usage")
HEADS = tuple(f for f in FIELDS if f)
GROUP = "image_group"


@dataclass(frozen=True)
class Product:
    """One catalogue image: its id, the snapshot's blob of its photo, and its label per head."""

    id: int
    blob: str
    labels: tuple[str, ...]  # in HEADS order


@dataclass(frozen=True)
class Prepared:
    """What the conversion decided: the rows to write and what it left out."""

    products: list[Product]  # kept rows, id order, rare classes already emptied
    kept: dict[str, list[str]]  # head -> classes kept, most frequent first
    emptied: dict[str, int]  # head -> cells emptied by the rare-class rule
    no_image: int  # table rows whose photo is not in the snapshot
    no_label: int  # rows left with no label at all
    groups: dict[int, int]  # id -> smallest id with the same photo bytes


# ---------------------------------------------------------------- reading the snapshot

def git(git_dir: Path, *args: str) -> bytes:
    """``git --git-dir GIT_DIR ARGS``'s stdout; a failure is one AttrfitError line."""
    try:
        proc = subprocess.run(["git", "--git-dir", str(git_dir), *args], capture_output=True, check=False)
    except OSError as e:
        raise AttrfitError(f"cannot run git: {e}") from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise AttrfitError(f"git {' '.join(args[:2])} in {git_dir} failed: {err[-1] if err else proc.returncode}")
    return proc.stdout


def check_snapshot(git_dir: Path, commit: str) -> None:
    """Refuse a folder that is no git directory, or one without the pinned commit."""
    if not (git_dir / "objects").is_dir() and not (git_dir / ".git").exists():
        raise AttrfitError(f"{git_dir} is not a git directory; give the path the fetch tool returned for {SOURCE}")
    try:
        git(git_dir, "cat-file", "-e", f"{commit}^{{commit}}")
    except AttrfitError:
        raise AttrfitError(f"{git_dir} has no commit {commit}: fetch {SOURCE} again, or pass --commit with "
                           "the snapshot's newest commit (figures then differ from the docs page)") from None


def image_blobs(git_dir: Path, commit: str) -> dict[int, str]:
    """Product id -> blob id of ``data/images/<id>.jpg`` at ``commit``."""
    out = {}
    for line in git(git_dir, "ls-tree", "-r", commit, "--", f"{IMAGES}/").decode().splitlines():
        meta, path = line.split("\t", 1)
        stem = Path(path).stem
        if path.endswith(".jpg") and stem.isdigit():
            out[int(stem)] = meta.split()[2]
    return out


def read_table(parquet: bytes) -> dict[str, list]:
    """The Parquet file's columns as lists (needs pyarrow)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise AttrfitError("reading the product table needs pyarrow: .venv/bin/pip install -e '.[fashion]'") from None
    return pq.read_table(io.BytesIO(parquet)).to_pydict()


def parse_description(text: str) -> tuple[str, ...]:
    """``"Apparel - Topwear - Shirts - Navy Blue - Casual"`` -> the HEADS labels, in order.

    Example:
        >>> parse_description("Apparel - Topwear - Shirts - Navy Blue - Casual")
        ('Apparel', 'Shirts', 'Navy Blue', 'Casual')
    """
    parts = [p.strip() for p in text.split(" - ")]
    if len(parts) != len(FIELDS):
        raise AttrfitError(f"a product description has {len(parts)} fields, not {len(FIELDS)}: {text!r}")
    return tuple(p for p, f in zip(parts, FIELDS) if f)


# ---------------------------------------------------------------- the rules

def kept_classes(values: list[str], min_share: float) -> list[str]:
    """Classes holding at least ``min_share`` of ``values``, most frequent first (ties by name).

    Example:
        >>> kept_classes(["a"] * 97 + ["b"] * 2 + ["c"], 0.02)  # the floor: 2 of 100
        ['a', 'b']
    """
    counts = Counter(v for v in values if v)
    floor = min_share * len(values)
    return [c for c, n in sorted(counts.items(), key=lambda cn: (-cn[1], cn[0])) if n >= floor]


def photo_groups(blobs: dict[int, str]) -> dict[int, int]:
    """Product id -> the smallest id whose photo has the same bytes (the same blob id).

    Example:
        >>> photo_groups({5: "x", 3: "x", 4: "y"})
        {3: 3, 4: 4, 5: 3}
    """
    first: dict[str, int] = {}
    for pid in sorted(blobs):
        first.setdefault(blobs[pid], pid)
    return {pid: first[blobs[pid]] for pid in sorted(blobs)}


def prepare(table: dict[str, list], blobs: dict[int, str], min_share: float) -> Prepared:
    """Rows with a photo, their labels parsed, rare classes emptied, unlabelled rows dropped; id order."""
    rows = sorted((int(pid), parse_description(d)) for pid, d in zip(table["product_id"], table["description"]))
    if len({pid for pid, _ in rows}) != len(rows):
        raise AttrfitError(f"{PRODUCTS} lists a product id twice")
    with_photo = [(pid, labels) for pid, labels in rows if pid in blobs]
    kept = {h: kept_classes([lab[i] for _, lab in with_photo], min_share) for i, h in enumerate(HEADS)}
    emptied = Counter()
    products = []
    for pid, labels in with_photo:
        cleaned = tuple(v if v in kept[h] else "" for h, v in zip(HEADS, labels))
        emptied.update(h for h, v, c in zip(HEADS, labels, cleaned) if v and not c)
        if any(cleaned):
            products.append(Product(pid, blobs[pid], cleaned))
    groups = photo_groups({p.id: p.blob for p in products})
    return Prepared(products, kept, {h: emptied[h] for h in HEADS}, len(rows) - len(with_photo),
                    len(with_photo) - len(products), groups)


# ---------------------------------------------------------------- writing

def blob_stream(git_dir: Path, blob_ids: list[str]):
    """(blob id, bytes) for each id, read by one ``git cat-file --batch`` process."""
    proc = subprocess.Popen(["git", "--git-dir", str(git_dir), "cat-file", "--batch"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)

    def ask() -> None:  # from a thread: git stops reading requests while its answers are not read
        try:
            proc.stdin.write("".join(f"{b}\n" for b in blob_ids).encode())
        except BrokenPipeError:
            pass  # the reader stopped early; its error is the one reported
        finally:
            proc.stdin.close()

    writer = threading.Thread(target=ask, daemon=True)
    writer.start()
    try:
        for b in blob_ids:
            header = proc.stdout.readline().split()
            if len(header) != 3 or header[1] != b"blob":
                raise AttrfitError(f"git cat-file: no blob {b} in {git_dir}")
            data = proc.stdout.read(int(header[2]))
            proc.stdout.read(1)  # the newline after each object
            yield b, data
    finally:
        proc.stdout.close()
        proc.wait()
        writer.join()


def write_images(git_dir: Path, products: list[Product], folder: Path) -> int:
    """Write each photo as ``folder/<id>.jpg`` (skipping files that already hold its bytes); return how many."""
    files.make_folder(folder, "images folder")
    blobs = sorted({p.blob for p in products})
    ids_of: dict[str, list[int]] = {}
    for p in products:
        ids_of.setdefault(p.blob, []).append(p.id)
    written = 0
    for blob, data in blob_stream(git_dir, blobs):
        for pid in ids_of[blob]:
            path = folder / f"{pid}.jpg"
            if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
                continue
            files.write_bytes(path, data, "image", durable=False)
            written += 1
    files.fsync_dir(folder)
    return written


def csv_text(prep: Prepared) -> str:
    """labels.csv: image_path, the heads, the group column; one row per product in id order."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image_path", *HEADS, GROUP])
    for p in prep.products:
        w.writerow([f"images/{p.id}.jpg", *p.labels, prep.groups[p.id]])
    return buf.getvalue()


def head_stats(prep: Prepared) -> dict[str, dict]:
    """Per head: labelled rows, class counts (most frequent first), majority rate among labelled rows."""
    out = {}
    for i, h in enumerate(HEADS):
        counts = Counter(p.labels[i] for p in prep.products if p.labels[i])
        labelled = sum(counts.values())
        out[h] = {"labelled": labelled, "missing": len(prep.products) - labelled,
                  "classes": {c: counts[c] for c in prep.kept[h]},
                  "majority_rate": round(max(counts.values()) / labelled, 4), "emptied": prep.emptied[h]}
    return out


def make_split(csv_path: Path, force: bool) -> Path:
    """``attrfit split CSV --group-column image_group`` (seed 0): the split every later command uses."""
    from attrfit.cli.app import main as attrfit

    if attrfit(["split", str(csv_path), "--group-column", GROUP, *(["--force"] if force else [])]) != 0:
        raise AttrfitError(f"attrfit split {csv_path} failed (its error is above)")
    return csv_path.with_suffix(".split.json")


# ---------------------------------------------------------------- command line

def markdown(stats: dict[str, dict], rows: int) -> str:
    lines = ["| head | classes | labelled | majority rate | classes (images) |", "|---|---|---|---|---|"]
    for h, s in stats.items():
        classes = ", ".join(f"{c} {n}" for c, n in s["classes"].items())
        lines.append(f"| {h} | {len(s['classes'])} | {s['labelled']} of {rows} | {s['majority_rate']:.3f} | "
                     f"{classes} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("git_dir", type=Path, help=f"the git directory the fetch tool returned for {SOURCE}")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--commit", default=COMMIT, help="snapshot commit to read (default: the one the docs page used)")
    p.add_argument("--min-share", type=float, default=0.01, help="a class with a smaller share of the images "
                   "becomes a missing label (default 0.01)")
    p.add_argument("--force", action="store_true", help="write again over an existing labels.csv and split")
    args = p.parse_args(argv)
    if not 0 <= args.min_share < 0.5:
        p.error("--min-share must be in [0, 0.5)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = check_output_folder(args.out, "dataset folder")
    csv_path = out / "labels.csv"
    if csv_path.exists() and not args.force:
        raise AttrfitError(f"{csv_path} already exists; pass --force to write the dataset again")
    check_snapshot(args.git_dir, args.commit)
    table = read_table(git(args.git_dir, "cat-file", "blob", f"{args.commit}:{PRODUCTS}"))
    prep = prepare(table, image_blobs(args.git_dir, args.commit), args.min_share)
    written = write_images(args.git_dir, prep.products, out / "images")
    text = csv_text(prep)
    files.write_text(csv_path, text, "labels CSV")  # last: a CSV never names a photo not yet written
    split = make_split(csv_path, args.force)
    stats = head_stats(prep)
    summary = {"source": SOURCE, "commit": args.commit, "min_share": args.min_share, "rows": len(prep.products),
               "groups": len(set(prep.groups.values())), "no_image": prep.no_image, "no_label": prep.no_label,
               "images_written": written, "labels_sha256": hashlib.sha256(text.encode()).hexdigest(),
               "split": split.name, "heads": stats}
    files.write_json(out / "dataset.json", summary, "dataset summary")
    print(markdown(stats, len(prep.products)))
    print(f"\n{len(prep.products)} images ({len(set(prep.groups.values()))} distinct photos) -> {csv_path}; "
          f"{prep.no_image} table rows without a photo, {prep.no_label} rows without a kept label dropped")
    print(f"command: `{shlex.join(['python', 'bench/second_dataset.py', *(argv if argv is not None else sys.argv[1:])])}`")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except AttrfitError as e:
        print(f"second_dataset: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
