"""``attrfit predict``: predictions for files, folders or a CSV; or, with ``--boxes``, for a detector's boxes on
the frames of a video (per box and per track: :mod:`attrfit.serving.boxes`)."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Iterator, TextIO

from attrfit.cli.args import add_decide_arg, add_device_arg, add_run_arg, add_tta_arg
from attrfit.core import files, outputs
from attrfit.core.errors import AttrfitError
from attrfit.data.table import IMAGE_COLUMN
from attrfit.model import checkpoint
from attrfit.serving.boxes import BoxRow, box_columns, track_columns
from attrfit.serving.box_crops import WEIGHTS
from attrfit.serving.predict import OUTPUT_FORMATS, Predictor, prediction_columns
from attrfit.serving.prediction_files import RowWriter, find_images, predict_files, write_rows

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("predict", help="predict attributes of image files, folders or a CSV of image paths")
    add_run_arg(p)
    p.add_argument("inputs", metavar="INPUT", nargs="*",
                   help="image files, folders (searched recursively) or CSVs with an image_path column")
    p.add_argument("--out", metavar="FILE", help="file to write (default: stdout)")
    p.add_argument("--force", action="store_true", help="replace an existing --out FILE (never an input or a run file)")
    p.add_argument("--format", choices=OUTPUT_FORMATS, help="csv or json (default: from --out's extension, else csv)")
    p.add_argument("--batch-size", type=int, default=64, metavar="B", help="images per forward pass (default 64)")
    add_tta_arg(p)
    add_decide_arg(p)
    p.add_argument("--all-probs", action="store_true", help="also write each class's probability (HEAD_prob_CLASS)")
    p.add_argument("--images", metavar="DIR", help="folder a CSV's image paths are relative to (default: the CSV's folder)")
    add_device_arg(p, "auto")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model with frozen weights first: seconds to start, then 1.1-1.3x the "
                        "images/s of the model on a CPU (worth it for many thousands of images; needs a C++ compiler)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_box_args(p)
    p.set_defaults(func=run_predict)


def add_box_args(p) -> None:
    g = p.add_argument_group("boxes on video frames (instead of INPUT)")
    g.add_argument("--boxes", metavar="BOXES",
                   help="a tracker's boxes: MOTChallenge text (frame,id,x,y,w,h[,conf,...]) or a CSV "
                        "(image_path,x,y,w,h[,track_id][,conf]); --out gets one row per box")
    g.add_argument("--frames", metavar="SRC",
                   help="the frames the boxes are on: a folder of numbered images (000001.jpg ...) or a video file "
                        "(frame 1 is the first; needs the [video] extra); for a CSV of boxes, the folder its image "
                        "paths are relative to (default: the CSV's folder)")
    g.add_argument("--tracks", metavar="FILE",
                   help="also write one row per track (its boxes' probabilities averaged) to FILE; given without "
                        "--out, only the tracks are written")
    g.add_argument("--track-weight", choices=WEIGHTS, default="area",
                   help="how a box counts in its track's average: its area inside the frame (default), the "
                        "detector's conf, or equal")
    g.add_argument("--no-context", dest="context", action="store_false",
                   help="pad mode: fill the margins that widen a box to the model's aspect ratio with grey, as "
                        "training's letterbox does, instead of the frame around the box")


def run_predict(args) -> int:
    fmt = _format(args.format, args.out)
    if args.batch_size < 1:
        raise AttrfitError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.boxes:
        return run_boxes(args)
    _no_box_flags(args)
    items = find_images(args.inputs, args.images)
    source = checkpoint.resolve(args.run)
    if args.out:  # checked before any image is predicted
        reads = outputs.Protected.of_runs([source], extra=[*(Path(t) for t in args.inputs), *(p for _, p in items)])
        outputs.check_output(args.out, args.force, reads, what="predictions")
    predictor = Predictor.from_checkpoint(source, device=args.device, compile=args.compile, decide=args.decide)
    columns = [IMAGE_COLUMN, *prediction_columns(predictor.schema, args.all_probs), "error"]
    rows = predict_files(predictor, items, args.batch_size, args.tta, args.all_probs, progress=not args.quiet)
    with _output(args.out) as stream:
        n, failed = write_rows(rows, stream, fmt, columns)
    where = f" -> {args.out}" if args.out else ""
    if failed == n:
        raise AttrfitError(f"none of the {n} images could be read (reasons above){where}")
    log.info("predicted %d of %d images%s%s; labels by decision rule %s", n - failed, n,
             f"; {failed} could not be read" if failed else "", where, predictor.rule)
    return 0


def run_boxes(args) -> int:
    """``predict RUN --boxes BOXES --frames SRC [--out FILE] [--tracks FILE]``: rows stream to both files."""
    if args.inputs:
        raise AttrfitError(f"give either INPUT images or --boxes, not both (got {' '.join(args.inputs)})")
    if args.images:
        raise AttrfitError("--images is for a CSV of images; with --boxes, --frames names the folder of the frames")
    source = checkpoint.resolve(args.run)
    predictor = Predictor.from_checkpoint(source, device=args.device, compile=args.compile, decide=args.decide)
    job = predictor.plan_boxes(args.frames, args.boxes, weight=args.track_weight, context=args.context,
                               batch_size=args.batch_size, tta=args.tta, all_probs=args.all_probs)
    box_out = args.out if args.out or not args.tracks else None
    reads = outputs.Protected.of_runs([source], extra=[Path(args.boxes), *job.source.paths(job.table.frames)])
    for flag, path in (("--out", args.out), ("--tracks", args.tracks)):
        if path:
            outputs.check_output(path, args.force, reads, what="predictions", flag=flag)
    if args.out and args.tracks and Path(args.out).resolve() == Path(args.tracks).resolve():
        raise AttrfitError(f"--out and --tracks name the same file {args.out}; give two names")
    with contextlib.ExitStack() as stack:
        boxes = RowWriter(stack.enter_context(_output(box_out)), _format(args.format, box_out),
                          box_columns(job.table, predictor, args.all_probs)) if args.out or not args.tracks else None
        tracks = RowWriter(stack.enter_context(_output(args.tracks)), _format(args.format, args.tracks),
                           track_columns(predictor, args.all_probs)) if args.tracks else None
        for item in job.stream(progress=not args.quiet):
            writer = boxes if isinstance(item, BoxRow) else tracks
            if writer:
                writer.write(item.row)
        for w in (boxes, tracks):
            if w:
                w.close()
        s = job.stats
        if s.failed == s.boxes:  # raised inside: the outputs are not put in place
            raise AttrfitError(f"none of the {s.boxes} boxes could be predicted (reasons above); nothing written")
    where = " -> " + ", ".join(p for p in (args.out, args.tracks) if p) if args.out or args.tracks else ""
    log.info("predicted %d of %d boxes on %d frames, %d tracks%s; labels by decision rule %s", s.boxes - s.failed,
             s.boxes, len(job.table.frames), len(job.table.tracks), where, predictor.rule)
    return 0


def _no_box_flags(args) -> None:
    if not args.inputs:
        raise AttrfitError("give images to predict (files, folders or a CSV), or --boxes BOXES --frames SRC")
    given = [f for f, v in (("--frames", args.frames), ("--tracks", args.tracks)) if v]
    given += ["--track-weight"] * (args.track_weight != "area") + ["--no-context"] * (not args.context)
    if given:
        raise AttrfitError(f"{', '.join(given)} only apply with --boxes")


def _format(fmt: str | None, out: str | None) -> str:
    return fmt or ("json" if out and Path(out).suffix.lower() == ".json" else "csv")


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[TextIO]:
    """stdout, or a file that appears complete or not at all (rows stream into a temp file beside it).

    File names that are not valid UTF-8 are written as their raw bytes (``surrogateescape``), so the CSV's
    ``image_path`` column holds exactly the name the file system has; JSON escapes them as ``\\udcXX``
    (which Python's ``json`` and ``os.fsencode`` turn back into the same bytes).
    """
    if not path:
        yield sys.stdout  # which cli.main set to surrogateescape
        return
    with files.atomic_open(path, "the predictions", text=True, newline="", encoding="utf-8",
                           errors="surrogateescape") as f:
        yield f
