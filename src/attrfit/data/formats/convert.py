"""``attrfit dataset``'s work: a public dataset's release -> labels CSV + one split file per official partition.

What lands in ``--out DIR``:

- ``labels.csv``: ``image_path`` (relative to DIR, or to the image folder with
  ``paths="images"``), ``person_id`` where the dataset has identities, one column per head;
- ``official.split.json`` (and ``official-2`` .. ``official-5`` for the five trials of PETA and
  RAPv2, and ``<stem>.split.json`` for a ``--partition`` file): attrfit split files whose sides
  are the partition's images, whose fingerprint is the table's as ``attrfit train`` reads it
  (so ``attrfit train DIR/labels.csv --split DIR/official.split.json`` runs the protocol), and
  whose ``origin`` says where the partition comes from. A partition that covers only some of
  the images (RAPzs covers the 26,638 with an identity) gets its own ``<stem>.csv``;
- ``dataset.json``: what was converted, from where, with which choices, and what was found;
  written last, so a folder without it holds no finished conversion;
- ``missing_images.txt``: the images not found or not readable, when there are any.

Every file is written atomically and only once everything was read and checked.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attrfit.core import files, outputs
from attrfit.core.errors import AttrfitError
from attrfit.core.version import __version__
from attrfit.data.formats import dataset as find_dataset
from attrfit.data.formats.fold import Columns, columns
from attrfit.data.formats.images import Found, find_images
from attrfit.data.formats.partition_file import read_partition
from attrfit.data.formats.source import SIDES, Partition, Source, shared_identities
from attrfit.data.split import NO_STRATIFY, Split, assignment_digest, fingerprint, record_duplicates, row_digest, \
    save_split
from attrfit.data.table import IMAGE_COLUMN, Table, read_table

CSV_NAME, MANIFEST, MISSING_LIST = "labels.csv", "dataset.json", "missing_images.txt"
GROUP_COLUMN = "person_id"
PATHS = ("csv", "images")


@dataclass(frozen=True)
class Request:
    """What to convert and how (the options of ``attrfit dataset``)."""

    dataset: str
    src: Path
    out: Path
    images: Path | None = None
    labels: str = "binary"
    attributes: str = "selected"
    partition: Path | None = None
    skip_missing: bool = False
    force: bool = False
    paths: str = "csv"
    val_fraction: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class Written:
    """One split file written, and the table it belongs to."""

    name: str
    csv: Path
    split: Path
    counts: dict[str, int]
    shared_identities: int | None  # identities with images on more than one side
    duplicates: int  # byte-identical images on different sides
    origin: str


@dataclass(frozen=True)
class Conversion:
    dataset: str
    out: Path
    csv: Path
    image_root: Path
    rows: int
    heads: tuple[str, ...]
    identities: int | None
    splits: tuple[Written, ...]
    notes: tuple[str, ...]
    missing: int


def convert(req: Request) -> Conversion:
    """Read, check and write; nothing is written before everything was read and checked.

    >>> c = convert(Request("peta", Path("PETA.mat"), Path("peta"), images=Path("images")))  # doctest: +SKIP
    >>> c.splits[0].split  # doctest: +SKIP
    PosixPath('peta/official.split.json')
    """
    ds = find_dataset(req.dataset)
    _check_request(req)
    check_out_folder(req, ds.title)
    source = ds.reader(req.src, req.images, req.val_fraction, req.seed) if ds.carves_val else ds.reader(req.src, req.images)
    partitions = source.partitions
    if req.partition is not None:
        partitions += (read_partition(req.partition, source, req.val_fraction, req.seed),)
    _check_names(partitions)
    found = find_images(source.image_root, source.images)
    keep = _kept_rows(req, source, found)
    cols = columns(source, keep, req.attributes, req.labels)
    return _write(req, source, found, keep, cols, partitions)


def _check_request(req: Request) -> None:
    if req.paths not in PATHS:
        raise AttrfitError(f"--paths must be one of {', '.join(PATHS)} (got '{req.paths}')")
    if not 0 < req.val_fraction < 1:
        raise AttrfitError(f"--val-fraction must be between 0 and 1 (got {req.val_fraction})")
    if not Path(req.src).exists():
        raise AttrfitError(f"{req.src}: no such file or folder")


def _check_names(partitions: tuple[Partition, ...]) -> None:
    names = [p.name for p in partitions]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise AttrfitError(f"two partitions would both be written as {twice[0]}.split.json; rename the --partition file")


# ---------------------------------------------------------------- the output folder

def check_out_folder(req: Request, title: str) -> None:
    """Refuse a folder holding another dataset (always) or other files (without --force), before any work."""
    out = outputs.check_output_folder(req.out, "dataset folder")  # never a run's folder
    if out.exists() and not out.is_dir():
        raise AttrfitError(f"--out {out} is a file; give a folder to write the dataset into")
    if out.is_dir():
        manifest = _read_manifest(out)
        if manifest is not None and manifest.get("dataset") != title:
            raise AttrfitError(f"--out {out} holds the {manifest.get('dataset')} dataset (converted from "
                               f"{manifest.get('source')}); choose another folder for {title}")
        if manifest is not None and not req.force:
            raise AttrfitError(f"--out {out} already holds {title} converted from {manifest.get('source')}; pass "
                               "--force to write it again (runs keep their own copy of their split)")
        if manifest is None:
            _check_foreign_files(out, req.force)
    files.probe_folder(files.make_folder(out, "output folder"), "dataset")


def _read_manifest(out: Path) -> dict | None:
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise AttrfitError(f"{path}: not readable as JSON; it is not one attrfit wrote: choose another --out") from None
    if not isinstance(doc, dict) or "dataset" not in doc:
        raise AttrfitError(f"{path}: is not an attrfit dataset record; choose another --out")
    return doc


def _check_foreign_files(out: Path, force: bool) -> None:
    ours = {CSV_NAME, MANIFEST, MISSING_LIST}
    present = sorted(p.name for p in out.iterdir() if not p.name.startswith(".") and p.name != MISSING_LIST)
    tables = [n for n in present if n in ours or n.endswith(".split.json")]
    if tables:
        raise AttrfitError(f"--out {out} holds {', '.join(tables[:3])}, which 'attrfit dataset' did not write (no "
                           f"{MANIFEST}); choose another folder, so that no table or split in use is replaced")
    if present and not force:
        raise AttrfitError(f"--out {out} is not empty (it holds {', '.join(present[:3])}); give a new or empty "
                           "folder, or pass --force to write beside those files")


# ---------------------------------------------------------------- the images

def _kept_rows(req: Request, source: Source, found: Found) -> np.ndarray:
    """Rows whose image was found and opens; without --skip-missing any other row is an error."""
    bad = len(found.missing) + len(found.unreadable)
    listed = Path(req.out) / MISSING_LIST
    if not bad and listed.is_file():
        listed.unlink()  # from an earlier run that found images missing
    if bad:
        lines = [f"missing\t{n}" for n in found.missing] + [f"unreadable\t{n}\t{why}" for n, why in found.unreadable]
        files.write_text(Path(req.out) / MISSING_LIST, "\n".join(lines) + "\n", "the list of missing images")
        if not req.skip_missing:
            shown = ", ".join((found.missing + [n for n, _ in found.unreadable])[:3])
            raise AttrfitError(
                f"{len(found.missing)} of {len(source.images)} images are missing and {len(found.unreadable)} "
                f"unreadable under {source.image_root} (e.g. {shown}; all listed in {Path(req.out) / MISSING_LIST}); "
                "pass --images with the folder that holds them, or --skip-missing to write the dataset without them")
    keep = np.array([f is not None for f in found.files], dtype=bool)
    if not keep.any():
        raise AttrfitError(f"none of the {len(source.images)} images was found under {source.image_root}")
    return np.flatnonzero(keep)


# ---------------------------------------------------------------- writing

def _write(req: Request, source: Source, found: Found, keep: np.ndarray, cols: Columns,
           partitions: tuple[Partition, ...]) -> Conversion:
    out = Path(req.out)
    root = Path(source.image_root) if req.paths == "images" else out
    paths = [_relative(found.files[i], root) for i in keep]
    staged: dict[Path, Path] = {}
    try:
        table = _stage_csv(out / CSV_NAME, paths, keep, source, cols, staged, req)
        written = tuple(_stage_split(p, table, keep, source, cols, staged, req) for p in partitions)
        for tmp, final in staged.items():
            outputs.check_output(final, True, outputs.Protected([Path(req.src)]), what="dataset file")
            os.replace(tmp, final)
    finally:
        for tmp in staged:
            if tmp.exists():
                tmp.unlink()
    notes = source.notes + cols.notes + _image_notes(found, req.skip_missing)
    conversion = Conversion(source.dataset, out, out / CSV_NAME, Path(source.image_root), len(keep), cols.heads,
                            len({i for i in table.groups or [] if i}) if source.identities is not None else None,
                            written, notes, len(source.images) - len(keep))
    files.write_json(out / MANIFEST, manifest(req, source, conversion), "the dataset record")
    return conversion


def _relative(path: Path, root: Path) -> str:
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root))).as_posix()


def _stage(final: Path, staged: dict[Path, Path]) -> Path:
    tmp = final.with_name(f".{final.name}.partial")
    staged[tmp] = final
    return tmp


def _stage_csv(final: Path, paths: list[str], rows: np.ndarray, source: Source, cols: Columns,
               staged: dict[Path, Path], req: Request) -> Table:
    """Write the table (``rows`` of the source, at ``paths``) under a temporary name; read it back as train will."""
    tmp = _stage(final, staged)
    identities = source.identities is not None
    header = [IMAGE_COLUMN] + ([GROUP_COLUMN] if identities else []) + list(cols.heads)
    position = {r: k for k, r in enumerate(rows.tolist())}  # cols.cells follow ``rows``
    with files.atomic_open(tmp, "the labels CSV", text=True, newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for path, r in zip(paths, rows):
            ident = [source.identities[r]] if identities else []
            w.writerow([path, *ident, *(cols.cells[h][position[r]] for h in cols.heads)])
    images = source.image_root if req.paths == "images" else None
    return read_table(tmp, images=images, group_column=GROUP_COLUMN if identities else None)


def _stage_split(p: Partition, table: Table, keep: np.ndarray, source: Source, cols: Columns,
                 staged: dict[Path, Path], req: Request) -> Written:
    out = Path(req.out)
    path_of = dict(zip(keep.tolist(), table.paths))
    sides = {s: [path_of[i] for i in p.sides[s].tolist() if i in path_of] for s in SIDES}
    covered = sum(len(v) for v in sides.values())
    csv_path = out / CSV_NAME
    if covered < len(table):  # a partition of some of the images: a table of its own
        csv_path = out / f"{p.name}.csv"
        sub = np.array(sorted({i for s in SIDES for i in p.sides[s].tolist() if i in path_of}), dtype=np.int64)
        row_of = {r: k for k, r in enumerate(keep.tolist())}
        sub_cols = dataclasses.replace(cols, cells={h: [cols.cells[h][row_of[i]] for i in sub] for h in cols.heads})
        table = _stage_csv(csv_path, [path_of[i] for i in sub], sub, source, sub_cols, staged, req)
    for s in ("train", "val", "test"):
        if not sides[s]:
            raise AttrfitError(f"partition {p.name}: its {s} side has no image left (missing images were skipped)")
    split = _split(table, sides, p.origin)
    split_path = out / f"{p.name}.split.json"
    save_split(split, _stage(split_path, staged), force=True)
    dups = len(split.exact_duplicates_across_sides or [])
    ident = shared_identities({s: p.sides[s] for s in SIDES}, source.identities)
    return Written(p.name, csv_path, split_path, dict(split.counts), ident, dups, p.origin)


def _split(table: Table, sides: dict[str, list[str]], origin: str) -> Split:
    """An attrfit split holding a published partition: its sides, the table's fingerprint, its origin."""
    sides = {s: sorted(sides[s]) for s in SIDES}
    digests = {table.paths[i]: row_digest(table, i) for i in range(len(table))}
    split = Split(seed=0, fingerprint=fingerprint(table), sides=sides, counts={s: len(sides[s]) for s in SIDES},
                  group_column=table.group_column, stratify=NO_STRATIFY, n_rows=len(table), schema=table.schema,
                  assignment=assignment_digest(sides), row_digests={s: [digests[p] for p in sides[s]] for s in SIDES},
                  origin=origin)
    return record_duplicates(split, table)


def _image_notes(found: Found, skipped: bool) -> tuple[str, ...]:
    notes = []
    if found.other_suffix:
        notes.append(f"{found.other_suffix} image(s) found under another image suffix than the annotation names "
                     "(a re-encoded copy)")
    if skipped and (found.missing or found.unreadable):
        notes.append(f"--skip-missing: {len(found.missing)} missing and {len(found.unreadable)} unreadable image(s) "
                     f"left out (listed in {MISSING_LIST})")
    return tuple(notes)


def manifest(req: Request, source: Source, c: Conversion) -> dict:
    """dataset.json: what was converted, from where, with which choices, what was found."""
    return {
        "dataset": source.dataset, "source": str(Path(req.src).resolve()), "source_sha256": _sha256(Path(req.src)),
        "images": str(c.image_root.resolve()), "image_paths": "relative to this folder" if req.paths == "csv"
        else "relative to the images folder (train with --images)", "labels": req.labels,
        "attributes": req.attributes, "rows": c.rows, "heads": list(c.heads), "identities": c.identities,
        "missing_images": c.missing, "notes": list(c.notes), "attrfit": __version__,
        "partitions": [{"name": w.name, "csv": w.csv.name, "split": w.split.name, "counts": w.counts,
                        "identities_on_several_sides": w.shared_identities,
                        "byte_identical_images_across_sides": w.duplicates, "origin": w.origin} for w in c.splits],
    }


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
