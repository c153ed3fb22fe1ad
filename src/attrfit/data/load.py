"""The data path in one place: table -> split (loaded, or made once and saved) -> verified -> image cache.

:func:`load_data` is what ``train``, ``evaluate``, ``lr-find`` and ``prepare`` call; it reads top to
bottom as the data flows (:func:`read_checked` is its first half, for readers that need no images):

1. the split file, where there is one: it decides the group column and refuses other split options;
2. the labels CSV, read into a :class:`~attrfit.data.table.Table` (its heads checked against the split's);
3. the split: the saved one, or a new one made from the table and saved, never silently re-made;
4. the split verified against the table (the same rows, labels and assignment), giving the rows per side;
5. the images, decoded once into the cache (or loaded from it), with the labels and sides as tensors.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from attrfit.data.cache import load_or_build, parse_size
from attrfit.core.errors import AttrfitError
from attrfit.core.options import OneOf, Range, option
from attrfit.data.split import (SIDES, Split, default_split_path, load_split, make_split, new_split_advice,
                                no_train_labels_message, record_duplicates, same_split, save_split, unlearnable_heads,
                                verify_split)
from attrfit.data.table import Table, read_table, with_class_order
from attrfit.data.schema import Schema

log = logging.getLogger(__name__)

RUN_SPLIT = "split.json"  # each run's own copy of its split: evaluable even if the original is replaced


def _size_check(text) -> str | None:
    try:
        parse_size(text)
    except AttrfitError:
        return "HxW with each side 8 to 4096 pixels, e.g. 128x64"
    return None


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how to read it (every field is a CLI option and a config key)."""

    csv: str = option("", "labels CSV: an image_path column and one column per attribute", flag="")
    images: str | None = option(None, "folder the image paths are relative to", "DIR",
                                default_text="the CSV's folder")
    heads: tuple[str, ...] = option((), "comma-separated label columns to train", "COL,...",
                                    default_text="every other column")
    ignore_columns: tuple[str, ...] | None = option(None, "comma-separated columns that are not labels", "COL,...",
                                                    default_text="filename")
    group_column: str | None = option(None, "column whose values never straddle sides (e.g. person_id)", "COL")
    split: str | None = option(None, "split file; made once if absent", "PATH",
                               default_text="<csv stem>.split.json beside the CSV")
    # How a NEW split is made (None: 0.15, 0.1, seed 0, the first head). An existing split
    # file keeps its own; a value given here that differs from it is an error, not ignored.
    test_fraction: float | None = option(None, "share of rows held out for the test side of a new split", "FRAC",
                                         Range(0, 1, lo_open=True, hi_open=True), default_text="0.15")
    val_fraction: float | None = option(None, "share of rows for the val side of a new split (picks the best "
                                        "epoch)", "FRAC", Range(0, 1, hi_open=True), default_text="0.1")
    split_seed: int | None = option(None, "seed of a new split", "N", Range(0, 2**32 - 1), default_text="0")
    stratify: str | None = option(None, "head whose class shares a new split keeps the same on every side, "
                                  "or 'none'", "HEAD", default_text="the first head")
    size: str = option("64x64", "HxW the images are resized to, e.g. 128x64 (people are tall)", "HxW", _size_check)
    resize: str = option("stretch", "stretch to HxW, or keep the aspect ratio and pad", "{stretch,pad}",
                         OneOf("stretch", "pad"))
    cache_dir: str | None = option(None, "where decoded images are cached", "DIR",
                                   default_text="$ATTRFIT_CACHE_DIR or ~/.cache/attrfit")
    skip_bad_images: bool = option(False, "drop unreadable images from every side instead of stopping")

    def split_path(self) -> Path:
        return Path(self.split) if self.split else default_split_path(Path(self.csv))


@dataclass
class Data:
    table: Table
    split: Split
    split_path: Path
    images: torch.Tensor  # uint8 N x 3 x H x W, decoded rows
    labels: torch.Tensor  # int64 N x n_heads, -1 = missing
    image_paths: list[str]  # image_path of each row of images
    sides: dict[str, torch.Tensor] = field(default_factory=dict)  # row indices into images per side

    @property
    def schema(self) -> Schema:
        return self.table.schema


def read_config_table(cfg: DataConfig, schema: Schema | None = None) -> Table:
    if not cfg.csv:
        raise AttrfitError("no CSV given: pass the labels CSV as the first argument")
    return read_table(
        cfg.csv,
        images=cfg.images,
        heads=list(cfg.heads) or None,
        ignore_columns=None if cfg.ignore_columns is None else list(cfg.ignore_columns),
        group_column=cfg.group_column,
        schema=schema,
    )


def read_checked(cfg: DataConfig, schema: Schema | None = None, create_split: bool = True):
    """Steps 1-4 of the data path: ``(table, split, split_path, rows per side)``, verified against each other.

    ``create_split=False`` refuses a missing split file instead of making one (evaluate, report).
    """
    path = cfg.split_path()
    saved = load_split(path) if path.exists() else None
    if saved is not None:
        cfg = follow_split(cfg, saved, path)
    table = read_config_table(cfg, schema)
    split = saved if saved is not None else new_split(cfg, table, path, create_split)
    table = match_split_schema(table, split, path)
    return table, split, path, verify_split(split, table, path)


def new_split(cfg: DataConfig, table: Table, path: Path, create: bool = True) -> Split:
    """The first split of a table: made from ``cfg``'s split options and saved at ``path``."""
    if not create:
        raise AttrfitError(f"{path}: no split file; make one with 'attrfit split {cfg.csv}'")
    split = record_duplicates(make_split(table, cfg.test_fraction, cfg.val_fraction, cfg.split_seed, cfg.stratify), table)
    save_split(split, path)
    log.info("made and saved a new split %s (test %d, val %d, train %d)", path,
             split.counts["test"], split.counts["val"], split.counts["train"])
    return split


SPLIT_OPTIONS = (("test_fraction", "test_fraction", "--test-fraction", "--test-fraction"),
                 ("val_fraction", "val_fraction", "--val-fraction", "--val-fraction"),
                 ("split_seed", "seed", "--split-seed", "--split-seed"),
                 ("stratify", "stratify", "--stratify", "--stratify"))  # (field, Split field, train flag, split flag)


def follow_split(cfg: DataConfig, split: Split, path: Path) -> DataConfig:
    """``cfg`` checked against the existing split ``split``; its group column filled in from it."""
    differ = [(flag, new_flag, getattr(cfg, f), getattr(split, key)) for f, key, flag, new_flag in SPLIT_OPTIONS
              if getattr(cfg, f) is not None and getattr(cfg, f) != getattr(split, key)]
    if differ:
        given = ", ".join(f"{flag} {mine} (the split: {theirs})" for flag, _, mine, theirs in differ)
        options = " ".join(f"{new_flag} {mine}" for _, new_flag, mine, _ in differ)
        raise AttrfitError(
            f"the split file {path} already exists and was made with other settings: {given}; a saved split is "
            f"never re-made. Leave these options out to use it as it is, or "
            f"{new_split_advice(f'{cfg.csv} {options}')}")
    recorded = split.group_column
    if cfg.group_column is None and recorded:
        log.info("using group column '%s', which %s was made with", recorded, path)
        return dataclasses.replace(cfg, group_column=recorded)
    if cfg.group_column != recorded:
        made = f"group column '{recorded}'" if recorded else "no group column"
        raise AttrfitError(
            f"the split file {path} was made with {made}, not --group-column '{cfg.group_column}' (a split keeps "
            f"groups on one side only for its own column); leave --group-column out to use the split's, or "
            f"{new_split_advice(f'{cfg.csv} --group-column {cfg.group_column}')}")
    return cfg


def match_split_schema(table: Table, split: Split, path: Path) -> Table:
    """Refuse other heads than the split's, naming them; adopt the split's class order where only that differs."""
    if split.schema is None:
        return table
    saved = split.schema
    if saved.heads != table.schema.heads:
        raise AttrfitError(
            f"the split file {path} was made for other heads: its heads are {list(saved.heads)}, the table's are "
            f"{list(table.schema.heads)}; pass --heads {','.join(saved.heads)} to use it, or "
            f"{new_split_advice(f'{table.csv_path} --heads ' + ','.join(table.schema.heads))}")
    same_classes = all(set(saved.classes[h]) == set(table.schema.classes[h]) for h in saved.heads)
    if same_classes and saved != table.schema:  # saved by an attrfit that ordered classes otherwise
        return with_class_order(table, saved)
    return table


def saved_run_config(cfg: DataConfig, run: str | Path) -> DataConfig:
    """The data options to re-read a run's data later (evaluate, report, resume).

    Uses the run's own copy of its split (``RUN/split.json``) where there is one, so a
    split file replaced or deleted since never makes the run unevaluable. The options for
    making a split no longer apply: the split exists.
    """
    cfg = dataclasses.replace(cfg, test_fraction=None, val_fraction=None, split_seed=None, stratify=None)
    copy = Path(run) / RUN_SPLIT
    if not copy.is_file():
        return cfg
    original = cfg.split_path()
    if not original.is_file():
        log.info("%s is gone; using the run's own copy %s", original, copy)
    elif not same_split(load_split(copy).ref(copy), load_split(original)):
        log.info("%s changed since the run was trained; using the run's own copy %s", original, copy)
    return dataclasses.replace(cfg, split=str(copy))


def check_trainable(data: "Data") -> None:
    """Refuse to train with an empty train or val side, or a head with no train label, naming the cause."""
    counts, csv = data.split.counts, data.table.csv_path
    if len(data.sides["train"]) == 0:
        raise AttrfitError(f"the train side of {data.split_path} is empty; {new_split_advice(csv)}")
    if len(data.sides["val"]) == 0:
        if counts["val"] > 0:
            cause = f"all {counts['val']} of its images were unreadable and dropped (--skip-bad-images)"
        elif data.split.val_fraction == 0:
            cause = "it was made with --val-fraction 0; training needs a val side to pick the best epoch"
        else:
            group = data.split.group_column
            cause = (f"its {len(data.table)} rows{f' (grouped by {group!r})' if group else ''} were too few for a "
                     "val share (an older attrfit saved such splits)")
        raise AttrfitError(f"the val side of {data.split_path} is empty: {cause}; {new_split_advice(csv)}")
    unlabelled = unlearnable_heads(data.labels[data.sides["train"]].numpy(), data.schema.heads)
    if unlabelled:
        raise AttrfitError(no_train_labels_message(unlabelled, f"{data.split_path} leaves"))


def load_data(cfg: DataConfig, schema: Schema | None = None, progress: bool = True, create_split: bool = True) -> Data:
    """The data path (see the module's docstring): the table, its verified split and the decoded images.

    >>> data = load_data(DataConfig(csv="demo/data/annotations.csv", size="128x64"))  # doctest: +SKIP
    >>> data.images.shape, {s: len(r) for s, r in data.sides.items()}  # doctest: +SKIP
    """
    table, split, split_path, rows = read_checked(cfg, schema, create_split)
    cache = load_or_build(
        table.paths, table.abs_paths(), parse_size(cfg.size), cfg.resize, cfg.cache_dir, cfg.skip_bad_images,
        progress=progress,
    )
    kept = {p: k for k, p in enumerate(cache.paths)}
    row_of_table = np.array([kept.get(p, -1) for p in table.paths], dtype=np.int64)
    labels = torch.full((len(cache.paths), len(table.schema.heads)), -1, dtype=torch.int64)
    ok = row_of_table >= 0
    labels[torch.from_numpy(row_of_table[ok])] = torch.from_numpy(table.labels[ok])
    sides = {}
    for s in SIDES:
        r = row_of_table[rows[s]]
        if (r < 0).any():
            log.warning("%d bad image(s) dropped from the %s side", int((r < 0).sum()), s)
        sides[s] = torch.from_numpy(r[r >= 0])
    return Data(table, split, split_path, cache.images, labels, list(cache.paths), sides)
