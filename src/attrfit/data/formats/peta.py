"""PETA (Deng et al., ACM MM 2014): the original release and the toolkits' PETA.mat.

**The release** (``PETA dataset/<subset>/archive/``): ten subsets, each with its images and a
``Label.txt`` whose lines are ``<ID> <attribute> <attribute> ...`` (the attributes present; the
ID is the prefix of the image file names, CUHK writes it as ``0606.png``). Labels are per
person, identities come from the file names (``<subset>/<prefix>``). The release has no
partition.

**PETA.mat** (shared with pedestrian-attribute-recognition-pytorch and Rethinking_of_PAR):
one struct ``peta`` with ``data`` (19000 x 109 uint16: image number, global person id, subset
number 1-10, person id within the subset, then the 105 attributes as 0/1), ``attribute``
(105 x 1 cell of names), ``selected_attribute`` (1 x 35, 1-based columns of ``data``: 5..39,
the 35 attributes the field reports) and ``partion_attribute`` (sic; 5 x 1 cell of structs
with ``train``/``val``/``test``: 9500/1900/7600 1-based image numbers: the five trials).
The toolkits ship the images renamed ``images/00001.png`` .. ``19000.png``; with the release's
images instead, image N is the N-th file with the subsets in case-insensitive order and the
files of a subset in name order (checked here against the subset and person id of every row).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from attrfit.core.errors import AttrfitError
from attrfit.data.formats.matfile import cells, field, load_mat, numbers, strings
from attrfit.data.formats.source import (SIDES, Partition, Source, check_labels, check_sides, group,
                                         identify)

SUBSETS = ("3DPeS", "CAVIAR4REID", "CUHK", "GRID", "i-LID", "MIT", "PRID", "SARC3D", "TownCentre", "VIPeR")
COLOURS = ("Black", "Blue", "Brown", "Green", "Grey", "Orange", "Pink", "Purple", "Red", "White", "Yellow")
# PETA.mat's attribute order: the 35 evaluated ones, the 4 x 11 colours, the 26 other binary ones.
SELECTED = (
    "personalLess30", "personalLess45", "personalLess60", "personalLarger60", "carryingBackpack", "carryingOther",
    "lowerBodyCasual", "upperBodyCasual", "lowerBodyFormal", "upperBodyFormal", "accessoryHat", "upperBodyJacket",
    "lowerBodyJeans", "footwearLeatherShoes", "upperBodyLogo", "hairLong", "personalMale", "carryingMessengerBag",
    "accessoryMuffler", "accessoryNothing", "carryingNothing", "upperBodyPlaid", "carryingPlasticBags",
    "footwearSandals", "footwearShoes", "lowerBodyShorts", "upperBodyShortSleeve", "lowerBodyShortSkirt",
    "footwearSneaker", "upperBodyThinStripes", "accessorySunglasses", "lowerBodyTrousers", "upperBodyTshirt",
    "upperBodyOther", "upperBodyVNeck")
OTHERS = (
    "accessoryHeadphone", "personalLess15", "carryingBabyBuggy", "hairBald", "footwearBoots", "lowerBodyCapri",
    "carryingShoppingTro", "carryingUmbrella", "personalFemale", "carryingFolder", "accessoryHairBand",
    "lowerBodyHotPants", "accessoryKerchief", "lowerBodyLongSkirt", "upperBodyLongSleeve", "lowerBodyPlaid",
    "lowerBodyThinStripes", "carryingLuggageCase", "upperBodyNoSleeve", "hairShort", "footwearStocking",
    "upperBodySuit", "carryingSuitcase", "lowerBodySuits", "upperBodySweater", "upperBodyThickStripes")
PARTS = ("upperBody", "lowerBody", "hair", "footwear")
ATTRIBUTES = SELECTED + tuple(p + c for p in PARTS for c in COLOURS) + OTHERS
# Label.txt spells one attribute otherwise; four it lists were dropped from PETA (under 10 images, its ReadMe)
SPELLINGS = {"footwearSneakers": "footwearSneaker"}
DISCARDED = frozenset({"accessoryFaceMask", "lowerBodyLogo", "accessoryShawl", "lowerBodyThickStripes"})
GROUPS = (
    group("age", "personal", ("Less15", "Less30", "Less45", "Less60", "Larger60")),
    group("gender", "personal", ("Male", "Female")),
    group("footwear", "footwear", ("LeatherShoes", "Sandals", "Shoes", "Sneaker", "Boots")),
    group("lower_style", "lowerBody", ("Casual", "Formal")),
    group("upper_style", "upperBody", ("Casual", "Formal")),
    group("hair_length", "hair", ("Short", "Long", "Bald")),
    group("sleeve", "upperBody", ("ShortSleeve", "LongSleeve", "NoSleeve")),
    *(group(f"{p.removesuffix('Body')}_color", p, COLOURS) for p in PARTS),
)
IMAGE_SUFFIXES = frozenset({".bmp", ".png", ".jpg", ".jpeg", ".gif", ".tif", ".tiff", ".ppm", ".webp"})


def read_peta(src: Path, images: Path | None = None) -> Source:
    """The release folder (``PETA dataset``) or a PETA.mat, whichever ``src`` is."""
    return read_release(src, images) if Path(src).is_dir() else read_mat(src, images)


# ---------------------------------------------------------------- the release: Label.txt per subset

def subset_folders(root: Path) -> dict[str, Path]:
    """The PETA subsets under ``root`` (names matched case-insensitively), in case-insensitive order."""
    if not root.is_dir():
        return {}
    wanted = {s.lower(): s for s in SUBSETS}
    found = {wanted[p.name.lower()]: p for p in root.iterdir() if p.is_dir() and p.name.lower() in wanted}
    return {s: found[s] for s in sorted(found, key=str.lower)}


def _image_folder(folder: Path) -> Path:
    return folder / "archive" if (folder / "archive").is_dir() else folder


def image_files(folder: Path) -> list[str]:
    """The image files of one subset folder, in name order."""
    return sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_label_txt(path: Path) -> tuple[dict[int, set[str]], dict[str, int]]:
    """``{person id: attributes present}`` and the count of each token left out (discarded or unknown)."""
    known, left_out = set(ATTRIBUTES), {}
    people: dict[int, set[str]] = {}
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise AttrfitError(f"{path}: cannot be read ({e.strerror or e})") from None
    for lineno, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            continue
        m = re.match(r"\d+", tokens[0])
        if not m:
            raise AttrfitError(f"{path}: line {lineno} starts with '{tokens[0]}', not a person ID; a PETA Label.txt "
                               "line is '<ID> <attribute> <attribute> ...'")
        attrs = {SPELLINGS.get(t, t) for t in tokens[1:]}
        for t in attrs - known:
            left_out[t] = left_out.get(t, 0) + 1
        people[int(m.group())] = attrs & known
    if not people:
        raise AttrfitError(f"{path}: holds no labelled person")
    return people, left_out


def read_release(root: Path, images: Path | None = None) -> Source:
    root, image_root = Path(root), Path(images) if images else Path(root)
    subsets = {s: f for s, f in subset_folders(root).items() if _label_file(f)}
    if not subsets:
        raise AttrfitError(f"{root}: no PETA subset folder with a Label.txt (looked for <subset>/archive/Label.txt, "
                           f"subsets {', '.join(SUBSETS)}); give the release's 'PETA dataset' folder, or a PETA.mat")
    names, rows, identities, notes, left_out = [], [], [], [], {}
    column = {a: j for j, a in enumerate(ATTRIBUTES)}
    for s, folder in subsets.items():
        people, dropped = read_label_txt(_label_file(folder))
        for t, n in dropped.items():
            left_out[t] = left_out.get(t, 0) + n
        image_folder = subset_folders(image_root).get(s)
        files = image_files(_image_folder(image_folder)) if image_folder else []
        unlabelled, used = [], set()
        for name in files:
            prefix = re.match(r"\d*", name).group()
            if not prefix or int(prefix) not in people:
                unlabelled.append(name)
                continue
            used.add(int(prefix))
            row = np.zeros(len(ATTRIBUTES), np.int8)
            row[[column[a] for a in people[int(prefix)]]] = 1
            names.append(str(_image_folder(image_folder).relative_to(image_root) / name))
            rows.append(row)
            identities.append(f"{s}/{prefix}")
        notes += _subset_notes(s, files, unlabelled, sorted(set(people) - used))
    if left_out:
        notes.append("Label.txt tokens left out (PETA's ReadMe drops accessoryFaceMask, lowerBodyLogo, accessoryShawl "
                     "and lowerBodyThickStripes): " + ", ".join(f"{t} x{n}" for t, n in sorted(left_out.items())))
    labels = np.array(rows, np.int8).reshape(len(rows), len(ATTRIBUTES))
    return Source("PETA", root, image_root, names, ATTRIBUTES, labels, tuple(range(len(SELECTED))), identities,
                  (), GROUPS, notes=tuple(notes))


def _label_file(folder: Path) -> Path | None:
    for p in (folder / "archive" / "Label.txt", folder / "Label.txt"):
        if p.is_file():
            return p
    return None


def _subset_notes(subset: str, files: list[str], unlabelled: list[str], unused: list[int]) -> list[str]:
    notes = []
    if not files:
        notes.append(f"{subset}: no images found (pass --images with the folder holding the subsets)")
    if unlabelled:
        notes.append(f"{subset}: {len(unlabelled)} image(s) whose ID has no line in Label.txt were left out, "
                     f"e.g. {', '.join(unlabelled[:3])}")
    if unused and files:
        notes.append(f"{subset}: {len(unused)} labelled ID(s) have no image, e.g. {', '.join(map(str, unused[:3]))}")
    return notes


# ---------------------------------------------------------------- PETA.mat

def read_mat(path: Path, images: Path | None = None) -> Source:
    path = Path(path)
    peta = identify(load_mat(path), "peta", path, "PETA")
    where = f"{path}: peta"
    data = numbers(field(peta, "data", where), f"{where}.data", ndim=2)
    attributes = tuple(strings(field(peta, "attribute", where), f"{where}.attribute"))
    check_labels(data[:, 4:], len(data), attributes, f"{where}.data (4 columns then one per attribute)")
    labels = data[:, 4:]
    if not np.isin(labels, (0, 1)).all():
        raise AttrfitError(f"{where}.data: attribute columns hold values other than 0 and 1 "
                           f"({sorted(set(np.unique(labels)) - {0, 1})[:5]})")
    selected = numbers(field(peta, "selected_attribute", where), f"{where}.selected_attribute") - 1 - 4
    if ((selected < 0) | (selected >= len(attributes))).any():
        raise AttrfitError(f"{where}.selected_attribute: names columns outside data's attribute columns 5..{4 + len(attributes)}")
    trials = cells(_partition_field(peta, where), f"{where}.partion_attribute")
    partitions = tuple(_trial(t, k, len(data), where) for k, t in enumerate(trials))
    image_root = Path(images) if images else path.parent / "images"
    names, notes = _mat_images(data, image_root)
    subset = [SUBSETS[s - 1] if 1 <= s <= len(SUBSETS) else f"subset{s}" for s in data[:, 2]]
    identities = [f"{s}/{p}" for s, p in zip(subset, data[:, 3])]
    return Source("PETA", path, image_root, names, attributes, labels.astype(np.int8), tuple(int(i) for i in selected),
                  identities, partitions, GROUPS, notes=tuple(notes))


def _partition_field(peta: dict, where: str):
    for name in ("partion_attribute", "partition_attribute"):  # the file's spelling, and the corrected one
        if isinstance(peta, dict) and name in peta:
            return peta[name]
    return field(peta, "partion_attribute", where)


def _trial(trial, k: int, n: int, where: str) -> Partition:
    w = f"{where}.partion_attribute{{{k + 1}}}"
    sides = {s: numbers(field(trial, s, w), f"{w}.{s}") for s in SIDES}
    name = "official" if k == 0 else f"official-{k + 1}"
    return Partition(name, check_sides(sides, n, w, base=1),
                     f"PETA.mat partion_attribute trial {k + 1} of the five (image-level, not identity-disjoint)")


def _mat_images(data: np.ndarray, image_root: Path) -> tuple[list[str], list[str]]:
    """PETA.mat's images: the release's files in release order where the subsets are there, else NNNNN.png."""
    folders = subset_folders(image_root)
    if not folders:
        return [f"{i:05d}.png" for i in data[:, 0]], []
    names = [""] * len(data)
    for k, s in enumerate(SUBSETS, start=1):
        rows = np.flatnonzero(data[:, 2] == k)
        rows = rows[np.argsort(data[rows, 0], kind="stable")]  # by image number
        files = image_files(_image_folder(folders[s])) if s in folders else []
        if len(files) != len(rows):
            raise AttrfitError(f"{image_root}: subset {s} holds {len(files)} images, PETA.mat has {len(rows)}; the "
                               "release's images map to PETA.mat's rows only when every subset is complete")
        for row, name in zip(rows, files):
            prefix = re.match(r"\d*", name).group()
            if not prefix or int(prefix) != data[row, 3]:
                raise AttrfitError(f"{image_root}: image {data[row, 0]} of PETA.mat is person {data[row, 3]} of {s}, "
                                   f"but the file in its place is {name}; these images are not in the release's order")
            names[row] = str(_image_folder(folders[s]).relative_to(image_root) / name)
    return names, [f"images: the PETA release's files in {image_root}, matched to PETA.mat's rows by subset and "
                   "person id (every row checked)"]
