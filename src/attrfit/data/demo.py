"""The built-in demo dataset: drawn people whose attributes leave visible, imperfect traces.

The real dataset attrfit was built for (hvc_annotations.csv, see ../shared/data/README.md)
cannot be shipped, so ``make_demo`` writes a stand-in with the same schema, the same class
names and the same class frequencies: ``OUT/annotations.csv`` plus ``OUT/resized/N.jpg``.

Every image is a cartoon person painted with PIL; each head leaves a trace that survives
downscaling to 64x64 but is not a perfect tell, and ``label_noise`` of the labels of each
head are then flipped to another class (the true classes are drawn so that the written
labels still follow the reference frequencies), so a small CNN beats the majority baseline
on most heads but cannot reach 100%:

- gender: long hair (85% of women, 12% of men), shoulders wider than hips, skirts (women)
- age: hair goes grey with age (noisy; blonde hair looks grey-ish), the 55+ stoop
- weight: body and limb width
- carryingbag: dark satchel with a cross-body strap / pale plastic bag with handles / none
- footwear: dark rounded shoes / bright pointed shoes with a heel / feet out of frame or
  hidden behind an object (CantSee)
- emotion: mouth (open smile, frown, flat line) and brows (angry: slanted down inward)
- bodypose: front (face, two eyes, collar), side (profile, one eye, nose, narrow body),
  back (hair covers the head, no face)
- imagequality: Good sharp, Average mild blur and noise, Bad strong blur, noise, low
  contrast and a low-quality JPEG round trip

Nuisances: position and scale, skin, clothing, hair and background colours, clutter shapes.
Randomness is drawn per image from ``np.random.default_rng([seed, 0, i])`` (labels from
``[seed, 1]``, label noise from ``[seed, 2]``), so the output is byte-identical for a seed
whatever the number of workers. Everything random about an image that is not a label is
drawn up front into a :class:`~attrfit.data.demo_scene.Scene`, so changing one label of the same scene changes only
that label's trace (the tests rely on this).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from attrfit.core import files
from attrfit.core.errors import AttrfitError
from attrfit.core.progress import progress_bar
from attrfit.data.demo_painter import render_person
from attrfit.data.demo_scene import CLASSES, HEAD_COLUMNS, REFERENCE_COUNTS

log = logging.getLogger(__name__)

CSV_COLUMNS = ["filename", *HEAD_COLUMNS, "image_path"]
JPEG_QUALITY = 90  # fixed, so output bytes depend only on the seed
CSV_NAME = "annotations.csv"
# Above ~0.19 the rarest classes (underweight, 55+) could not keep their reference share
# after noise even if they were never drawn as true labels; see class_probabilities.
MAX_LABEL_NOISE = 0.15
IMAGE_DIR = "resized"
MARKER = ".attrfit-demo"  # marks a folder the demo wrote: it may write there again


# ---------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------


def class_probabilities(head: str, label_noise: float = 0.0) -> np.ndarray:
    """Probabilities to draw the *true* classes of ``head`` with, such that after
    ``add_label_noise(rate=label_noise)`` the written labels follow the reference counts.

    Noise moves a share r of each class to the k-1 others uniformly, so the observed share is
    q = p (1 - r) + (1 - p) r / (k - 1); solve for p. Exact while r / (k - 1) < min q, which
    holds for every head up to MAX_LABEL_NOISE.

    >>> class_probabilities("gender").round(3)
    array([0.563, 0.437])
    """
    counts = np.array(list(REFERENCE_COUNTS[head].values()), dtype=np.float64)
    q = counts / counts.sum()
    k, r = len(q), label_noise
    p = (q - r / (k - 1)) / (1 - r - r / (k - 1))
    if (p <= 0).any():
        raise AttrfitError(f"demo: label_noise {label_noise} is too high for the rare classes of {head}")
    return p / p.sum()  # sums to 1 already; guards rounding


def sample_labels(n: int, seed: int, label_noise: float = 0.0) -> np.ndarray:
    """Draw the true (noise-free) classes of ``n`` demo images.

    Returns an int64 array of shape (n, len(HEAD_COLUMNS)): column k holds indices into
    ``list(REFERENCE_COUNTS[HEAD_COLUMNS[k]])``. Heads are independent; the probabilities
    are those of :func:`class_probabilities`, so the labels written after ``label_noise``
    follow the reference frequencies. Prefix-stable: the first rows for ``n=40`` equal
    those for ``n=2000``.

    >>> labels = sample_labels(2000, seed=0)
    >>> labels.shape
    (2000, 8)
    """
    u = np.random.default_rng([seed, 1]).random((n, len(HEAD_COLUMNS)))  # row-major: prefix-stable
    labels = np.empty((n, len(HEAD_COLUMNS)), dtype=np.int64)
    for k, head in enumerate(HEAD_COLUMNS):
        cdf = np.cumsum(class_probabilities(head, label_noise))
        labels[:, k] = np.minimum(np.searchsorted(cdf, u[:, k], side="right"), len(cdf) - 1)
    return labels


def add_label_noise(labels: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """Return a copy of ``labels`` (n, heads) where each cell, with probability ``rate``,
    is replaced by a uniformly drawn *other* class of its head.

    >>> noisy = add_label_noise(sample_labels(100, 0), 0.05, seed=0)
    """
    n_classes = np.array([len(CLASSES[head]) for head in HEAD_COLUMNS])
    u = np.random.default_rng([seed, 2]).random((*labels.shape, 2))
    flip = u[..., 0] < rate
    shift = 1 + np.floor(u[..., 1] * (n_classes - 1)).astype(np.int64)  # in 1..k-1: never the same class
    return np.where(flip, (labels + shift) % n_classes, labels)


# ---------------------------------------------------------------------------------------
# Writing the dataset
# ---------------------------------------------------------------------------------------


def _check_args(n: int, seed: int, size: tuple[int, int], label_noise: float, workers: int | None) -> None:
    if not isinstance(n, int) or n < 10:
        raise AttrfitError(f"demo: n must be an integer >= 10, got {n!r}")
    if not isinstance(seed, int) or seed < 0:
        raise AttrfitError(f"demo: seed must be a non-negative integer, got {seed!r}")
    if len(size) != 2 or not all(isinstance(s, int) and s >= 16 for s in size):
        raise AttrfitError(f"demo: size must be (height, width) with both integers >= 16, got {size!r}")
    if not 0.0 <= label_noise <= MAX_LABEL_NOISE:
        raise AttrfitError(f"demo: label_noise must be between 0 and {MAX_LABEL_NOISE}, got {label_noise!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise AttrfitError(f"demo: workers must be a positive integer, got {workers!r}")


def _write_image(path: Path, classes: np.ndarray, seed: int, index: int, size: tuple[int, int]) -> None:
    img = render_person(classes, np.random.default_rng([seed, 0, index]), size)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    # never half an image, even on a full disk; no fsync per image (the CSV, written last, is fsynced)
    files.write_bytes(path, buf.getvalue(), "the demo image", durable=False)


def _check_out_dir(out: Path, force: bool) -> None:
    """Write only into a new or empty folder, or over an earlier demo dataset (``force`` allows anything)."""
    csv_path = out / CSV_NAME
    if out.exists() and not out.is_dir():
        raise AttrfitError(f"demo: {out} exists and is not a folder; choose another output folder")
    if force or not out.exists():
        return
    if csv_path.exists():
        raise AttrfitError(f"demo: {csv_path} already exists; use another folder, delete it, or pass force")
    others = sorted(p.name for p in out.iterdir() if p.name != MARKER)
    if others and not (out / MARKER).exists():
        raise AttrfitError(
            f"demo: {out} already holds files ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}) that "
            f"the demo did not write, and it would overwrite {IMAGE_DIR}/N.jpg; choose a new or empty folder, "
            "or pass --force to write over them"
        )


def make_demo(
    out_dir: str | Path,
    n: int = 2000,
    seed: int = 0,
    size: tuple[int, int] = (224, 224),
    label_noise: float = 0.05,
    workers: int | None = None,
    progress: bool = False,
    *,
    force: bool = False,
) -> Path:
    """Write OUT_DIR/annotations.csv and OUT_DIR/resized/N.jpg (N = 1..n); return the CSV path.

    Same seed, same arguments -> byte-identical CSV and images, whatever ``workers``.
    The CSV is written last (atomically), so its presence marks a finished dataset; the
    marker file ``.attrfit-demo``, written first, marks a folder the demo may write into
    again. Raises AttrfitError if OUT_DIR/annotations.csv exists, or if OUT_DIR holds
    files the demo did not write, unless ``force``.

    >>> csv_path = make_demo("demo", n=200, size=(64, 64))  # doctest: +SKIP
    """
    size = tuple(size) if isinstance(size, (tuple, list)) else (size,)
    _check_args(n, seed, size, label_noise, workers)
    out = Path(out_dir)
    csv_path = out / CSV_NAME
    _check_out_dir(out, force)
    files.make_folder(out / IMAGE_DIR, "demo image folder")
    files.write_text(out / MARKER, "written by attrfit demo-data; the folder may be written again\n")
    if csv_path.exists():  # force: until the new CSV is written, the folder is an unfinished dataset
        csv_path.unlink()

    true = sample_labels(n, seed, label_noise)
    observed = add_label_noise(true, label_noise, seed)
    workers = workers or min(4, os.cpu_count() or 1)
    log.info("demo: drawing %d images of %dx%d into %s with %d workers", n, size[0], size[1], out, workers)
    # Threads suffice: PIL's filters and JPEG codec release the GIL, and nothing forks a
    # process that may hold torch state.
    bar = progress_bar(total=n, desc="demo images", enabled=progress)
    with ThreadPoolExecutor(max_workers=workers) as pool, bar:
        paths = [out / IMAGE_DIR / f"{i + 1}.jpg" for i in range(n)]
        futures = [pool.submit(_write_image, paths[i], true[i], seed, i, size) for i in range(n)]
        try:
            for future in futures:
                future.result()  # re-raises a worker's exception here
                bar.update(1)
        except BaseException:  # a full disk or Ctrl-C: do not draw the thousands of images still queued
            for future in futures:
                future.cancel()
            raise

    with files.atomic_open(csv_path, "the demo labels", text=True, newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for i in range(n):
            names = [CLASSES[head][int(c)] for head, c in zip(HEAD_COLUMNS, observed[i])]
            writer.writerow([f"images/Set{1 + i % 4}/{i + 1}.jpg", *names, f"{IMAGE_DIR}/{i + 1}.jpg"])
    log.info("demo: wrote %s (%d rows, label noise %.2f)", csv_path, n, label_noise)
    return csv_path
