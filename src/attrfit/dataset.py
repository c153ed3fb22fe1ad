"""The data path composed: table -> verified split -> image cache -> tensors per side.

:func:`load_data` is what ``train``, ``evaluate`` and ``lr-find`` call. It reads the CSV,
loads (or, the first time, makes and saves) the split, verifies the split against the
table, and loads the decoded images from the cache.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from attrfit.cache import load_or_build, parse_size
from attrfit.errors import AttrfitError
from attrfit.options import OneOf, Range, option
from attrfit.split import SIDES, default_split_path, load_split, make_split, record_duplicates, save_split, verify_split
from attrfit.table import Schema, Table, read_table

log = logging.getLogger(__name__)


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
    test_fraction: float = option(0.15, "share of rows held out for the test side", "FRAC",
                                  Range(0, 1, lo_open=True, hi_open=True))
    val_fraction: float = option(0.1, "share of rows for the val side (picks the best epoch)", "FRAC",
                                 Range(0, 1, hi_open=True))
    split_seed: int = option(0, "seed of the split (only when the split file is made)", "N", Range(0, 2**32 - 1))
    stratify: str | None = option(None, "head whose class shares are kept the same on every side", "HEAD",
                                  default_text="the first head")
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
    split: dict
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


def obtain_split(cfg: DataConfig, table: Table, create: bool = True) -> tuple[dict, Path]:
    """Load the saved split; make and save it the first time (never silently re-made)."""
    path = cfg.split_path()
    if path.exists():
        return load_split(path), path
    if not create:
        raise AttrfitError(f"{path}: no split file; make one with 'attrfit split {cfg.csv}'")
    split = make_split(table, cfg.test_fraction, cfg.val_fraction, cfg.split_seed, cfg.stratify)
    record_duplicates(split, table)
    save_split(split, path)
    log.info("made and saved a new split %s (test %d, val %d, train %d)", path,
             split["counts"]["test"], split["counts"]["val"], split["counts"]["train"])
    return split, path


def load_data(cfg: DataConfig, schema: Schema | None = None, progress: bool = True, create_split: bool = True) -> Data:
    table = read_config_table(cfg, schema)
    split, split_path = obtain_split(cfg, table, create=create_split)
    rows = verify_split(split, table, split_path)
    if split.get("group_column") != cfg.group_column:
        raise AttrfitError(
            f"{split_path} was made with group column {split.get('group_column')!r}, not {cfg.group_column!r}; "
            "pass the same --group-column or make a new split"
        )
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
