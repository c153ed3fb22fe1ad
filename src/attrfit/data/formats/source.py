"""What every dataset reader returns: the contract between a format and the converter.

A reader turns one public release (annotation file + image folder) into a :class:`Source`:
the images in the dataset's own order, the binary attributes as the dataset defines them
(1 present, 0 absent, -1 not labelled), the identities where the dataset has them, its
official partitions as row indices, and its mutually exclusive one-hot groups. The
converter (:mod:`attrfit.data.formats.convert`) does the rest the same way for every dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from attrfit.core.errors import AttrfitError

SIDES = ("train", "val", "test")
MISSING = -1


@dataclass(frozen=True)
class Group:
    """Attributes of which at most one is present in an image (age bins, colours): one categorical head.

    ``members`` pairs each attribute with the class it becomes.
    """

    head: str
    members: tuple[tuple[str, str], ...]


def group(head: str, prefix: str, names) -> Group:
    """``group("upper_color", "upperBody", ["Black", "Blue"])``: attributes upperBodyBlack, upperBodyBlue."""
    return Group(head, tuple((prefix + n, n) for n in names))


@dataclass(frozen=True)
class Partition:
    """One train/val/test partition: row indices (0-based, into the Source's images) per side."""

    name: str  # the split file's stem: "official", "official-2", or a partition file's stem
    sides: dict[str, np.ndarray]
    origin: str  # where it comes from, in words (recorded in the split file)


@dataclass(frozen=True)
class Source:
    """A dataset as its release defines it, before any choice of attributes or head kind."""

    dataset: str  # "PETA", "PA-100k", ...
    path: Path  # the annotation file (or release folder) read
    image_root: Path
    images: list[str]  # image names relative to image_root, in the dataset's order
    attributes: tuple[str, ...]
    labels: np.ndarray  # int8, len(images) x len(attributes): 1, 0, or MISSING
    selected: tuple[int, ...]  # the attributes the field evaluates (its published protocol)
    identities: list[str] | None  # one per image ('' where unknown), or None
    partitions: tuple[Partition, ...] = ()
    groups: tuple[Group, ...] = ()
    value_names: dict[str, tuple[str, str]] = field(default_factory=dict)  # classes of a two-valued attribute
    notes: tuple[str, ...] = ()  # what the reader found worth saying (shown and recorded)


def check_labels(labels: np.ndarray, n_images: int, attributes, where: str) -> None:
    """Refuse a label matrix whose shape disagrees with the image and attribute lists, naming the field."""
    if labels.ndim != 2 or labels.shape != (n_images, len(attributes)):
        raise AttrfitError(f"{where}: the labels are {'x'.join(map(str, labels.shape))}, but there are {n_images} "
                           f"images and {len(attributes)} attributes; is the file complete?")


def check_sides(sides: dict[str, np.ndarray], n: int, where: str, base: int = 0) -> dict[str, np.ndarray]:
    """Row indices per side, checked: inside the table, on one side only, train and test not empty.

    ``base`` 1 reads MATLAB's 1-based indices (the result is always 0-based).
    """
    out = {}
    for side, idx in sides.items():
        idx = np.asarray(idx, dtype=np.int64).ravel() - base
        bad = idx[(idx < 0) | (idx >= n)]
        if len(bad):
            shown = ", ".join(str(int(b) + base) for b in bad[:3])
            raise AttrfitError(f"{where}: the {side} side lists index {shown}, outside the {n} images "
                               f"({'1' if base else '0'}-based indices up to {n - 1 + base})")
        out[side] = idx
    counts = np.bincount(np.concatenate([np.zeros(0, np.int64), *out.values()]), minlength=n)
    twice = np.flatnonzero(counts > 1)
    if len(twice):
        i = int(twice[0])
        on = [s for s in out if (out[s] == i).any()]
        raise AttrfitError(f"{where}: image index {i + base} is listed {int(counts[i])} times "
                           f"(on the {' and '.join(on)} side); a partition puts each image on one side once")
    for side in ("train", "test"):
        if len(out.get(side, ())) == 0:
            raise AttrfitError(f"{where}: the {side} side is empty")
    return out


def carve_val(sides: dict[str, np.ndarray], identities: list[str] | None, fraction: float,
              seed: int) -> tuple[dict[str, np.ndarray], str]:
    """A val side taken from train where a partition has none: ``fraction`` of train's identities
    (of its images where there are no identities), drawn with ``seed``. Returns the sides and a sentence.

    >>> s, why = carve_val({"train": np.arange(10), "test": np.arange(10, 12)}, None, 0.2, 0)
    >>> len(s["val"]), len(s["train"])
    (2, 8)
    """
    train = np.asarray(sides["train"])
    units = [identities[i] or f"\x00{i}" for i in train] if identities is not None else [str(i) for i in train]
    keys = sorted(set(units))
    rng = np.random.default_rng(seed)
    k = max(1, int(round(fraction * len(keys))))
    chosen = {keys[j] for j in rng.permutation(len(keys))[:k]}
    in_val = np.array([u in chosen for u in units], dtype=bool)
    what = "identities" if identities is not None else "images"
    why = (f"the partition has no val side: val is {k} of the {len(keys)} train {what} "
           f"({fraction:g}, seed {seed}); train keeps the rest")
    return {"train": train[~in_val], "val": train[in_val], "test": np.asarray(sides["test"])}, why


def shared_identities(sides: dict[str, np.ndarray], identities: list[str] | None) -> int | None:
    """How many identities have images on more than one side (None: the dataset has no identities)."""
    if identities is None:
        return None
    side_of: dict[str, set[str]] = {}
    for side, idx in sides.items():
        for i in idx:
            if identities[i]:
                side_of.setdefault(identities[i], set()).add(side)
    return sum(len(s) > 1 for s in side_of.values())


# the top-level variable that tells each dataset's annotation file apart, and the command for it
KNOWN_VARIABLES = {
    "peta": ("PETA.mat", "peta"),
    "train_images_name": ("PA-100k annotation.mat", "pa100k"),
    "RAP_annotation": ("RAP_annotation.mat", "rapv2"),
    "market_attribute": ("market_attribute.mat", "market1501"),
    "duke_attribute": ("duke_attribute.mat", "dukemtmc"),
}


def identify(top: dict, variable: str, path: Path, dataset: str):
    """``top[variable]``; else an error saying which dataset's file ``path`` is, and the command for it."""
    if variable in top:
        return top[variable]
    for var, (what, name) in KNOWN_VARIABLES.items():
        if var in top:
            raise AttrfitError(f"{path}: is a {what} (it holds '{var}'), not a {dataset} annotation file; "
                               f"convert it with 'attrfit dataset {name} {path}'")
    raise AttrfitError(f"{path}: has no variable '{variable}' (it holds {', '.join(top) or 'nothing'}); "
                       f"is it {dataset}'s annotation file?")
