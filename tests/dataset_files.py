"""Tiny copies of the field's annotation files, in their real schemas, for tests/data/formats/test_formats.py.

Field names, shapes, dtypes and MATLAB struct/cell layouts are those of the public files (see
docs/datasets.md for the sources): PETA.mat's ``peta`` struct (``partion_attribute``, sic),
PA-100k's top-level variables, RAPv2's ``RAP_annotation`` struct, the Market-1501/DukeMTMC
``train``/``test`` structs with their two field orders. ``save_mat`` writes MATLAB 5 files with
scipy, or ``-v7.3`` files (HDF5) with h5py in MATLAB's layout: arrays transposed, char as
uint16, cells as references into ``#refs#``, structs as groups with ``MATLAB_fields``, and the
512-byte MATLAB header in the user block.
"""

from __future__ import annotations

import itertools
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from attrfit.data.formats import peta as peta_format

V5, V73 = "5", "7.3"


# ---------------------------------------------------------------- MATLAB files

def cell(items, shape=None) -> np.ndarray:
    """A MATLAB cell array (object ndarray) of ``items``, N x 1 unless ``shape`` says otherwise."""
    items = list(items)
    out = np.empty(shape or (len(items), 1), dtype=object)
    for k, idx in enumerate(np.ndindex(out.shape[::-1])):  # MATLAB's column order
        out[idx[::-1]] = items[k]
    return out


def save_mat(path: Path, variables: dict, version: str = V5) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if version == V5:
        from scipy.io import savemat

        savemat(path, variables, format="5", oned_as="row")
    else:
        _save_v73(path, variables)
    return path


def _save_v73(path: Path, variables: dict) -> None:
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        refs, names = f.create_group("#refs#"), (f"r{k}" for k in itertools.count())
        for name, value in variables.items():
            _put(f, name, value, refs, names)
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    with open(path, "r+b") as fh:
        fh.write(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")


CLASSES = {np.dtype("float64"): "double", np.dtype("uint8"): "uint8", np.dtype("uint16"): "uint16",
           np.dtype("int16"): "int16", np.dtype("int32"): "int32", np.dtype("int64"): "int64"}


def _put(parent, name: str, value, refs, names) -> None:
    import h5py

    if isinstance(value, dict):
        g = parent.create_group(name)
        g.attrs["MATLAB_class"] = np.bytes_("struct")
        g.attrs.create("MATLAB_fields", [np.array(list(k), dtype="S1") for k in value],
                       dtype=h5py.vlen_dtype(np.dtype("S1")))
        for k, v in value.items():
            _put(g, k, v, refs, names)
    elif isinstance(value, str):
        d = parent.create_dataset(name, data=np.array([[ord(c)] for c in value], dtype=np.uint16))
        d.attrs["MATLAB_class"] = np.bytes_("char")
        d.attrs["MATLAB_int_decode"] = np.int32(2)
    elif isinstance(value, np.ndarray) and value.dtype == object:
        data = np.empty(value.shape[::-1], dtype=h5py.ref_dtype)
        for idx in np.ndindex(value.shape):
            key = next(names)
            _put(refs, key, value[idx], refs, names)
            data[idx[::-1]] = refs[key].ref
        d = parent.create_dataset(name, data=data)
        d.attrs["MATLAB_class"] = np.bytes_("cell")
    else:
        arr = np.atleast_2d(np.asarray(value))
        logical = arr.dtype == bool
        d = parent.create_dataset(name, data=(arr.astype(np.uint8) if logical else arr).T)
        d.attrs["MATLAB_class"] = np.bytes_("logical" if logical else CLASSES[arr.dtype])


def image(path: Path, value: int = 0, size=(16, 8)) -> None:
    """A tiny image whose red channel says ``value`` (0/1), so a model can learn something."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    a = rng.integers(0, 60, (*size, 3)).astype(np.uint8)
    a[..., 0] += np.uint8(150 * value)
    Image.fromarray(a).save(path)


# ---------------------------------------------------------------- PETA: the release and PETA.mat

# (subset, files) in the release: 3DPeS sorts by name, not number (100_ < 104_ < 11_), CUHK's IDs
# are file names in its Label.txt, i-LID sorts before MIT only when case is ignored.
RELEASE = {
    "3DPeS": ["100_3_FRAME_26_RGB.bmp", "100_4_FRAME_185_RGB.bmp", "104_53_FRAME_70_RGB.bmp",
              "104_54_FRAME_19_RGB.bmp", "11_903_FRAME_150_RGB.bmp", "11_908_FRAME_372_RGB.bmp"],
    "CUHK": ["0002.png", "0003.png", "0606.png", "0607.png"],
    "i-LID": ["0001_001.jpg", "0001_002.jpg", "0002_001.jpg", "0002_002.jpg"],
    "MIT": ["00001_male_back.jpg", "00002_male_back.jpg", "00003_male_back.jpg", "00004_male_back.jpg"],
}
AGES = ("personalLess30", "personalLess45", "personalLess60", "personalLarger60")


def peta_people(seed: int = 0) -> dict[tuple[str, int], np.ndarray]:
    """(subset, person id) -> the person's 105 labels; one person has no age bin, one has two."""
    rng = np.random.default_rng(seed)
    people = {}
    for s, files in RELEASE.items():
        for f in files:
            pid = int(f.split("_")[0].split(".")[0])
            if (s, pid) in people:
                continue
            row = rng.integers(0, 2, len(peta_format.ATTRIBUTES)).astype(np.uint16)
            row[[peta_format.ATTRIBUTES.index(a) for a in AGES]] = 0
            row[peta_format.ATTRIBUTES.index(AGES[len(people) % 4])] = 1
            people[(s, pid)] = row
    people[("CUHK", 606)][[peta_format.ATTRIBUTES.index(a) for a in AGES]] = 0  # no age bin
    people[("MIT", 4)][[peta_format.ATTRIBUTES.index(a) for a in AGES[:2]]] = 1  # two age bins
    return people


def write_peta_release(root: Path, people=None) -> Path:
    """``root/PETA dataset/<subset>/archive/`` with images and Label.txt as the release has them."""
    people = people or peta_people()
    male = peta_format.ATTRIBUTES.index("personalMale")
    for s, files in RELEASE.items():
        folder = root / "PETA dataset" / s / "archive"
        lines = []
        for f in files:
            pid = int(f.split("_")[0].split(".")[0])
            image(folder / f, int(people[(s, pid)][male]))
        for (subset, pid), row in people.items():
            if subset != s:
                continue
            names = [peta_format.ATTRIBUTES[j] for j in np.flatnonzero(row)]
            names = ["footwearSneakers" if n == "footwearSneaker" else n for n in names]  # the release's spelling
            key = f"{pid:04d}.png" if s == "CUHK" else str(pid)
            lines.append(" ".join([key, *names] + (["accessoryFaceMask"] if pid == 100 else [])))
        if s == "CUHK":
            lines.append("0000.png upperBodyBlack personalMale")  # an ID whose image is not in the release
        (folder / "Label.txt").write_text("\n".join(lines) + "\n")
    return root / "PETA dataset"


def peta_rows() -> list[tuple[str, str, int]]:
    """(subset, file, person id) of every image, in PETA.mat's order."""
    rows = []
    for s in sorted(RELEASE, key=str.lower):
        for f in sorted(RELEASE[s]):
            rows.append((s, f, int(f.split("_")[0].split(".")[0])))
    return rows


def peta_trials(n: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    """Five random train/val/test partitions, 1-based image numbers, as N x 1 uint16 columns."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(5):
        p = rng.permutation(n) + 1
        cut = (n // 2, n // 2 + n // 5)
        out.append({"train": p[: cut[0]], "val": p[cut[0]: cut[1]], "test": p[cut[1]:]})
    return out


def write_peta_mat(path: Path, version: str = V5, people=None, trials=None) -> Path:
    """PETA.mat: struct ``peta`` with data (N x 109 uint16), attribute, selected_attribute, partion_attribute."""
    people = people or peta_people()
    rows = peta_rows()
    pids = {key: k + 1 for k, key in enumerate(dict.fromkeys((s, p) for s, _, p in rows))}
    subset_no = {s: peta_format.SUBSETS.index(s) + 1 for s in RELEASE}
    data = np.array([[i + 1, pids[(s, p)], subset_no[s], p, *people[(s, p)]] for i, (s, _, p) in enumerate(rows)],
                    dtype=np.uint16)
    trials = trials or peta_trials(len(rows))
    parts = cell([{s: t[s].reshape(-1, 1).astype(np.uint16) for s in ("train", "val", "test")} for t in trials])
    peta = {"data": data, "attribute": cell(peta_format.ATTRIBUTES),
            "selected_attribute": np.arange(5, 40, dtype=np.uint8).reshape(1, -1), "partion_attribute": parts}
    return save_mat(path, {"peta": peta}, version)


def write_peta_toolkit_images(folder: Path) -> None:
    """The toolkits' renamed copies: images/00001.png .. in PETA.mat's order."""
    people = peta_people()
    male = peta_format.ATTRIBUTES.index("personalMale")
    for i, (s, _, p) in enumerate(peta_rows()):
        image(folder / f"{i + 1:05d}.png", int(people[(s, p)][male]))


# ---------------------------------------------------------------- PA-100k

PA100K_ATTRIBUTES = ("Female", "AgeOver60", "Age18-60", "AgeLess18", "Front", "Side", "Back", "Hat", "Glasses",
                     "HandBag", "ShoulderBag", "Backpack", "HoldObjectsInFront", "ShortSleeve", "LongSleeve",
                     "UpperStride", "UpperLogo", "UpperPlaid", "UpperSplice", "LowerStripe", "LowerPattern",
                     "LongCoat", "Trousers", "Shorts", "Skirt&Dress", "boots")
PA100K_SIDES = {"train": 8, "val": 4, "test": 4}


def write_pa100k(root: Path, version: str = V5, label_rows: dict | None = None) -> Path:
    """annotation.mat (top-level variables) and data/NNNNNN.jpg."""
    rng = np.random.default_rng(2)
    variables, k = {"attributes": cell(PA100K_ATTRIBUTES)}, 0
    for side, n in PA100K_SIDES.items():
        names = [f"{k + i + 1:06d}.jpg" for i in range(n)]
        labels = rng.integers(0, 2, (n, len(PA100K_ATTRIBUTES))).astype(np.uint8)
        labels[:, 1:4] = np.eye(3, dtype=np.uint8)[np.arange(n) % 3]  # one age bin each
        for name, row in zip(names, labels):
            image(root / "data" / name, int(row[0]))
        variables[f"{side}_images_name"] = cell(names)
        variables[f"{side}_label"] = labels[: (label_rows or {}).get(side, n)]
        k += n
    return save_mat(root / "annotation.mat", variables, version)


# ---------------------------------------------------------------- RAPv2

RAP_ATTRIBUTES = ("Femal", "AgeLess16", "Age17-30", "Age31-45", "Age46-60", "AgeBiger60", "BodyFat", "BodyNormal",
                  "BodyThin", "Customer", "Employee", "hs-BaldHead", "ub-ColorBlack", "up-ColorRed", "ub-ColorWhite",
                  "viewpoint", "person-position-x")
RAP_SELECTED = (1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15)  # 1-based, as the file has them
RAP_N = 20


def rap_name(i: int) -> str:
    return f"CAM{1 + i % 3:02d}_2014-02-15_20140215161032-20140215162620_tarid{i}_frame218_line1.png"


def rap_trials() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    out = []
    for _ in range(5):
        p = rng.permutation(RAP_N) + 1
        out.append({"train": p[:10], "val": p[10:14], "test": p[14:]})
    return out


def write_rap(root: Path, version: str = V5, trials=None) -> Path:
    """RAP_annotation/RAP_annotation.mat and RAP_dataset/*.png."""
    rng = np.random.default_rng(4)
    data = rng.integers(0, 2, (RAP_N, len(RAP_ATTRIBUTES))).astype(np.float64)
    data[:, 1:6] = np.eye(5)[np.arange(RAP_N) % 5]
    data[[2, 7], 0] = 2  # uncertain gender
    data[:, RAP_ATTRIBUTES.index("viewpoint")] = 1 + np.arange(RAP_N) % 4
    data[:, -1] = rng.integers(10, 300, RAP_N)
    ids = np.array([[1 + i // 3] if i < 12 else [-1 - i % 2] for i in range(RAP_N)], dtype=np.int16)
    trials = trials or rap_trials()
    rap = {"name": cell(rap_name(i) for i in range(RAP_N)), "data": data, "attribute": cell(RAP_ATTRIBUTES),
           "selected_attribute": np.array([RAP_SELECTED], dtype=np.float64),
           "partition_attribute": cell([{f"{s}_index": t[s].reshape(1, -1).astype(np.float64)
                                         for s in ("train", "val", "test")} for t in trials], shape=(1, 5)),
           "person_identity": ids,
           "partition_reid": {"train_identity": np.array([[1, 2]], np.uint16), "test_identity": np.array([[3, 4]], np.uint16)}}
    for i in range(RAP_N):
        image(root / "RAP_dataset" / rap_name(i), int(data[i, 0] == 1))
    return save_mat(root / "RAP_annotation" / "RAP_annotation.mat", {"RAP_annotation": rap}, version)


# ---------------------------------------------------------------- Market-1501 and DukeMTMC-reID attributes

MARKET_TRAIN_ORDER = ("age", "backpack", "bag", "handbag", "downblack", "downblue", "downbrown", "downgray",
                      "downgreen", "downpink", "downpurple", "downwhite", "downyellow", "upblack", "upblue", "upgreen",
                      "upgray", "uppurple", "upred", "upwhite", "upyellow", "clothes", "down", "up", "hair", "hat",
                      "gender", "image_index")
MARKET_TEST_ORDER = ("age", "backpack", "bag", "handbag", "clothes", "down", "up", "hair", "hat", "gender", "upblack",
                     "upwhite", "upred", "uppurple", "upyellow", "upgray", "upblue", "upgreen", "downblack",
                     "downwhite", "downpink", "downpurple", "downyellow", "downgray", "downblue", "downgreen",
                     "downbrown", "image_index")
MARKET_IDS = {"train": ("0002", "0007", "0010", "0011", "0012", "0020"), "test": ("0001", "0003", "0004", "0005")}
DUKE_ORDER = ("backpack", "bag", "handbag", "boots", "gender", "hat", "shoes", "top", "downblack", "downwhite",
              "downred", "downgray", "downblue", "downgreen", "downbrown", "upblack", "upwhite", "upred", "uppurple",
              "upgray", "upblue", "upgreen", "upbrown", "image_index")


def _identity_struct(order, ids, seed, colours) -> dict:
    """One side's struct: each field 1 x K uint8 (1 no / 2 yes; age 1-4), image_index a 1 x K cell."""
    rng = np.random.default_rng(seed)
    k = len(ids)
    s = {}
    for name in order:
        if name == "image_index":
            s[name] = cell(ids, shape=(1, k))
        elif name == "age":
            s[name] = (1 + np.arange(k) % 4).astype(np.uint8).reshape(1, -1)
        else:
            s[name] = rng.integers(1, 3, (1, k)).astype(np.uint8)
    for part, names in colours.items():
        onehot = np.eye(len(names), dtype=np.uint8)[np.arange(k) % len(names)]  # identity j: colour j
        onehot[0, 1] = 1  # the first identity has two colours
        onehot[1, :] = 0  # the second has none
        for j, c in enumerate(names):
            s[part + c] = (1 + onehot[:, j]).reshape(1, -1)
    return {n: s[n] for n in order}


def write_market(root: Path, version: str = V5, duke: bool = False) -> Path:
    """market_attribute.mat (or duke_attribute.mat) and bounding_box_train/test with 2 images per identity,
    plus the gallery's distractors 0000 and junk -1."""
    from attrfit.data.formats.market import DUKE, MARKET

    layout = DUKE if duke else MARKET
    orders = {"train": DUKE_ORDER, "test": DUKE_ORDER[::-1][1:] + ("image_index",)} if duke else \
        {"train": MARKET_TRAIN_ORDER, "test": MARKET_TEST_ORDER}
    top = {side: _identity_struct(orders[side], MARKET_IDS[side], 5 + k, layout.colours)
           for k, side in enumerate(("train", "test"))}
    if duke:
        top["train"]["top"][0, 2] = 0  # Duke's train 'top' has an unlabelled identity
    for side, folder in (("train", "bounding_box_train"), ("test", "bounding_box_test")):
        for pid in MARKET_IDS[side]:
            for c in (1, 2):
                image(root / folder / f"{pid}_c{c}s1_000451_03.jpg", int(pid) % 2)
    for junk in ("0000_c1s1_000001_01.jpg", "-1_c2s1_000002_01.jpg"):
        image(root / "bounding_box_test" / junk)
    name = layout.variable
    return save_mat(root / f"{name}.mat", {name: {"train": top["train"], "test": top["test"]}}, version)
