"""Market-1501 and DukeMTMC-reID attributes (Lin et al., Pattern Recognition 2019): identity-level labels.

``market_attribute.mat`` / ``duke_attribute.mat`` (vana77/Market-1501_Attribute,
vana77/DukeMTMC-attribute) hold one struct with ``train`` and ``test``, each a struct of
1 x K fields, one value per identity: ``image_index`` (a cell of 4-digit identity strings) and
one field per attribute, 1 = no / 2 = yes (or the two values their READMEs name: gender
male/female, ...), Market's ``age`` 1-4 (young, teenager, adult, old); 0 (seen once in Duke's
``top``) is unlabelled. The train and test structs list their fields in different orders:
they are read by name.

Each identity's labels go to every image of it: ``bounding_box_train/`` for train,
``bounding_box_test/`` for test (file names start with the identity; the gallery's distractors
``0000`` and junk ``-1`` have no labels and are left out, as the dataset's evaluation script
does). The official partition has no val side: it is taken from train's identities.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from attrfit.core.errors import AttrfitError
from attrfit.data.formats.matfile import field, load_mat, numbers, strings
from attrfit.data.formats.source import MISSING, Partition, Source, carve_val, group, identify

AGES = ("young", "teenager", "adult", "old")
NO_YES = ("no", "yes")


class Layout:
    """One dataset's names: its variable, its attributes' value names and its colour groups."""

    def __init__(self, dataset, variable, values, colours):
        self.dataset, self.variable, self.values, self.colours = dataset, variable, values, colours


MARKET = Layout("Market-1501", "market_attribute",
                {"gender": ("male", "female"), "hair": ("short", "long"), "up": ("long sleeve", "short sleeve"),
                 "down": ("long", "short"), "clothes": ("dress", "pants"), "hat": NO_YES, "backpack": NO_YES,
                 "bag": NO_YES, "handbag": NO_YES},
                {"up": ("black", "white", "red", "purple", "yellow", "gray", "blue", "green"),
                 "down": ("black", "white", "pink", "purple", "yellow", "gray", "blue", "green", "brown")})
DUKE = Layout("DukeMTMC-reID", "duke_attribute",
              {"gender": ("male", "female"), "top": ("short", "long"), "boots": NO_YES, "hat": NO_YES,
               "backpack": NO_YES, "bag": NO_YES, "handbag": NO_YES, "shoes": ("dark", "light")},
              {"up": ("black", "white", "red", "purple", "gray", "blue", "green", "brown"),
               "down": ("black", "white", "red", "gray", "blue", "green", "brown")})
FOLDERS = {"train": "bounding_box_train", "test": "bounding_box_test"}


def read_market(path: Path, images: Path | None = None, val_fraction: float = 0.1, seed: int = 0) -> Source:
    return _read(MARKET, path, images, val_fraction, seed)


def read_duke(path: Path, images: Path | None = None, val_fraction: float = 0.1, seed: int = 0) -> Source:
    return _read(DUKE, path, images, val_fraction, seed)


def attribute_names(layout: Layout, has_age: bool) -> tuple[str, ...]:
    """The binary attributes: two-valued fields (1 = the second value), age one-hot, colours one-hot."""
    ages = tuple(f"age_{a}" for a in AGES) if has_age else ()
    colours = tuple(p + c for p, cs in layout.colours.items() for c in cs)
    return tuple(layout.values) + ages + colours


def _read(layout: Layout, path: Path, images: Path | None, val_fraction: float, seed: int) -> Source:
    path = Path(path)
    top = identify(load_mat(path), layout.variable, path, layout.dataset)
    image_root = Path(images) if images else path.parent
    train = field(top, "train", f"{path}: {layout.variable}")
    has_age = isinstance(train, dict) and "age" in train
    attributes = attribute_names(layout, has_age)
    names, labels, identities, sides, notes = [], [], [], {}, []
    for side, folder in FOLDERS.items():
        where = f"{path}: {layout.variable}.{side}"
        per_id = _identity_labels(field(top, side, f"{path}: {layout.variable}"), attributes, layout, where)
        files = _image_files(image_root / folder)
        start = len(names)
        kept = [f for f in files if f.split("_")[0] in per_id]
        names += [f"{folder}/{f}" for f in kept]
        labels += [per_id[f.split("_")[0]] for f in kept]
        identities += [f.split("_")[0] for f in kept]
        sides[side] = np.arange(start, len(names))
        notes += _side_notes(side, folder, image_root, files, kept, per_id)
    sides, why = carve_val(sides, identities, val_fraction, seed)
    official = Partition("official", sides, f"{path.name}: identity-level train/test of {layout.dataset} "
                         f"(identity-disjoint); {why}")
    labels = np.array(labels, np.int8).reshape(len(names), len(attributes))
    groups = tuple(group(f"{p}_color", p, cs) for p, cs in layout.colours.items())
    groups += (group("age", "age_", AGES),) if has_age else ()
    return Source(layout.dataset, path, image_root, names, attributes, labels, tuple(range(len(attributes))),
                  identities, (official,), groups, dict(layout.values), tuple(notes))


def _identity_labels(side: dict, attributes, layout: Layout, where: str) -> dict[str, np.ndarray]:
    """identity string -> its row of binary attributes (MISSING where the field is 0)."""
    ids = strings(field(side, "image_index", where), f"{where}.image_index")
    cols = []
    for a in layout.values:
        v = numbers(field(side, a, where), f"{where}.{a}")
        cols.append(_binary(v, a, where, len(ids)))
    if "age_young" in attributes:
        age = numbers(field(side, "age", where), f"{where}.age")
        _check_len(age, "age", where, len(ids))
        for k in range(1, len(AGES) + 1):
            cols.append(np.where(age == 0, MISSING, (age == k).astype(np.int8)))
    for part, colours in layout.colours.items():
        for c in colours:
            cols.append(_binary(numbers(field(side, part + c, where), f"{where}.{part}{c}"), part + c, where, len(ids)))
    rows = np.stack(cols, axis=1).astype(np.int8)
    return dict(zip(ids, rows))


def _binary(v: np.ndarray, name: str, where: str, n: int) -> np.ndarray:
    _check_len(v, name, where, n)
    if not np.isin(v, (0, 1, 2)).all():
        raise AttrfitError(f"{where}.{name}: values outside 1 (no) and 2 (yes): {sorted(set(v.tolist()) - {0, 1, 2})[:5]}")
    return np.where(v == 0, MISSING, v - 1).astype(np.int8)


def _check_len(v: np.ndarray, name: str, where: str, n: int) -> None:
    if len(v) != n:
        raise AttrfitError(f"{where}.{name}: {len(v)} values, but image_index lists {n} identities")


def _image_files(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.is_file())


def _side_notes(side, folder, root, files, kept, per_id) -> list[str]:
    if not files:
        raise AttrfitError(f"{root / folder}: no images; pass --images with the folder that holds {folder}/")
    notes = []
    dropped = len(files) - len(kept)
    if dropped:
        notes.append(f"{side}: {dropped} image(s) of {folder}/ belong to no labelled identity (distractors 0000, "
                     "junk -1) and were left out")
    seen = {f.split("_")[0] for f in kept}
    unseen = sorted(set(per_id) - seen)
    if unseen:
        notes.append(f"{side}: {len(unseen)} labelled identit(ies) have no image in {folder}/, e.g. {', '.join(unseen[:3])}")
    return notes
