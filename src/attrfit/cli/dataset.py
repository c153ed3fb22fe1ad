"""``attrfit dataset NAME SRC --out DIR``: a public pedestrian-attribute dataset and its official partitions."""

from __future__ import annotations

import shlex
from pathlib import Path

from attrfit.data.formats import datasets
from attrfit.data.formats.convert import PATHS, Request, convert
from attrfit.data.formats.fold import ATTRIBUTES, LABELS


def register(sub) -> None:
    known = datasets()
    p = sub.add_parser(
        "dataset", help="convert a public pedestrian-attribute dataset (PETA, PA-100k, RAPv2, Market-1501, DukeMTMC) "
                        "into a labels CSV and its official partitions as split files",
        description="Datasets: " + "; ".join(f"{d.name}: {d.title} ({d.source})" for d in known.values())
                    + ". docs/datasets.md lists the layouts and the exact commands.")
    p.add_argument("name", metavar="NAME", choices=list(known), help=f"one of {', '.join(known)}")
    p.add_argument("src", metavar="SRC", help="the dataset's annotation file (or PETA's release folder)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write labels.csv, the split files and "
                   "dataset.json into")
    p.add_argument("--images", metavar="DIR", help="folder holding the images (default: where the dataset's own "
                   "layout puts them beside SRC)")
    p.add_argument("--labels", choices=LABELS, default="binary", help="binary: one 0/1 head per attribute, the "
                   "field's protocol (default); categorical: each mutually exclusive group (age bins, colours, ...) "
                   "folded into one softmax head")
    p.add_argument("--attributes", choices=ATTRIBUTES, default="selected", help="selected: the attributes the "
                   "field evaluates, e.g. PETA's 35 (default); all: every binary attribute of the file")
    p.add_argument("--partition", metavar="FILE", help="another partition (e.g. a zero-shot one) as JSON or CSV "
                   "image lists; written as FILE's stem .split.json")
    p.add_argument("--skip-missing", action="store_true", help="write the dataset without the images that are "
                   "missing or unreadable (they are listed in DIR/missing_images.txt either way)")
    p.add_argument("--paths", choices=PATHS, default="csv", help="image paths relative to the CSV's folder "
                   "(default), or to --images (then train with --images DIR too)")
    p.add_argument("--val-fraction", type=float, default=0.1, metavar="FRAC", help="where a partition has no val "
                   "side: the share of train identities moved to val (default 0.1)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of that val draw (default 0)")
    p.add_argument("--force", action="store_true", help="write again into a folder holding this dataset, or "
                   "beside other files")
    p.set_defaults(func=run)


def run(args) -> int:
    req = Request(args.name, Path(args.src), Path(args.out), Path(args.images) if args.images else None, args.labels,
                  args.attributes, Path(args.partition) if args.partition else None, args.skip_missing, args.force,
                  args.paths, args.val_fraction, args.seed)
    c = convert(req)
    print(summary(c, req))
    return 0


def summary(c, req: Request) -> str:
    """What was written, the notes, and the commands that train and evaluate on the official partition."""
    ident = f", {c.identities} identities" if c.identities is not None else ""
    lines = [f"{c.dataset}: {c.rows} images{ident}, {len(c.heads)} heads ({req.labels}, {req.attributes} "
             f"attributes) -> {c.csv}"]
    lines += [f"  note: {n}" for n in c.notes]
    for w in c.splits:
        sizes = ", ".join(f"{s} {w.counts[s]}" for s in ("train", "val", "test"))
        shared = "" if w.shared_identities is None else f"; {w.shared_identities} identities on more than one side"
        dups = f"; {w.duplicates} byte-identical image(s) across sides" if w.duplicates else ""
        lines.append(f"{w.split} ({sizes}{shared}{dups}): {w.origin}")
    first = c.splits[0] if c.splits else None
    images = f" --images {shlex.quote(str(c.image_root))}" if req.paths == "images" else ""
    if first is not None:
        lines.append(f"train on it: attrfit train {shlex.quote(str(first.csv))} --split {shlex.quote(str(first.split))}"
                     f"{images} --size 256x128 --budget 15m")
    else:
        lines.append(f"the release has no partition: attrfit split {shlex.quote(str(c.csv))} --group-column person_id"
                     f"{images} (identity-disjoint), or convert PETA.mat for the five trials")
    return "\n".join(lines)
