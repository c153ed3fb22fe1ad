"""``attrfit predict``: predictions for files, folders or a CSV."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Iterator, TextIO

from attrfit.cli.args import add_device_arg, add_run_arg, add_tta_arg
from attrfit.core import files, outputs
from attrfit.core.errors import AttrfitError
from attrfit.data.table import IMAGE_COLUMN
from attrfit.model import checkpoint
from attrfit.serving.predict import OUTPUT_FORMATS, Predictor, find_images, predict_files, prediction_columns, write_rows

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("predict", help="predict attributes of image files, folders or a CSV of image paths")
    add_run_arg(p)
    p.add_argument("inputs", metavar="INPUT", nargs="+",
                   help="image files, folders (searched recursively) or CSVs with an image_path column")
    p.add_argument("--out", metavar="FILE", help="file to write (default: stdout)")
    p.add_argument("--force", action="store_true", help="replace an existing --out FILE (never an input or a run file)")
    p.add_argument("--format", choices=OUTPUT_FORMATS, help="csv or json (default: from --out's extension, else csv)")
    p.add_argument("--batch-size", type=int, default=64, metavar="B", help="images per forward pass (default 64)")
    add_tta_arg(p)
    p.add_argument("--all-probs", action="store_true", help="also write each class's probability (HEAD_prob_CLASS)")
    p.add_argument("--images", metavar="DIR", help="folder a CSV's image paths are relative to (default: the CSV's folder)")
    add_device_arg(p, "auto")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model with frozen weights first: seconds to start, then 1.1-1.3x the "
                        "images/s of the model on a CPU (worth it for many thousands of images; needs a C++ compiler)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_predict)


def run_predict(args) -> int:
    fmt = args.format or ("json" if args.out and Path(args.out).suffix.lower() == ".json" else "csv")
    if args.batch_size < 1:
        raise AttrfitError(f"--batch-size must be at least 1, got {args.batch_size}")
    items = find_images(args.inputs, args.images)
    source = checkpoint.resolve(args.run)
    if args.out:  # checked before any image is predicted
        reads = outputs.Protected.of_runs([source], extra=[*(Path(t) for t in args.inputs), *(p for _, p in items)])
        outputs.check_output(args.out, args.force, reads, what="predictions")
    predictor = Predictor.from_checkpoint(source, device=args.device, compile=args.compile)
    columns = [IMAGE_COLUMN, *prediction_columns(predictor.schema, args.all_probs), "error"]
    rows = predict_files(predictor, items, args.batch_size, args.tta, args.all_probs, progress=not args.quiet)
    with _output(args.out) as stream:
        n, failed = write_rows(rows, stream, fmt, columns)
    where = f" -> {args.out}" if args.out else ""
    if failed == n:
        raise AttrfitError(f"none of the {n} images could be read (reasons above){where}")
    log.info("predicted %d of %d images%s%s", n - failed, n, f"; {failed} could not be read" if failed else "", where)
    return 0


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
