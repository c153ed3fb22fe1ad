"""RAPv2 (Li et al., TIP 2018): ``RAP_annotation/RAP_annotation.mat``.

One struct ``RAP_annotation`` (field names as the dataset's own MATLAB scripts use them,
dangweili/RAP; field order and types as huanghoujing/PTL reads them): ``name`` (84928 x 1 cell
of image file names), ``data`` (84928 x 152: the binary attributes as 0/1 with 2 for
uncertain, plus ``viewpoint`` 1-4 and 32 box coordinates), ``attribute`` (152 x 1 cell of
names), ``selected_attribute`` (1 x 54, 1-based: the attributes the field reports),
``partition_attribute`` (1 x 5 cell of structs with ``train_index``/``val_index``/``test_index``,
1-based: the five trials), ``person_identity`` (84928 x 1: >0 a person, -1 a distractor, -2
unknown) and ``partition_reid``. Images sit in ``RAP_dataset/`` beside ``RAP_annotation/``.

An uncertain label (2) becomes a missing label, as the dataset's own scripts ignore it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from attrfit.core.errors import AttrfitError
from attrfit.data.formats.matfile import cells, field, load_mat, numbers, strings
from attrfit.data.formats.source import (MISSING, SIDES, Group, Partition, Source, check_labels, check_sides, group,
                                         identify)

UNCERTAIN = 2
COLOURS = ("Black", "White", "Gray", "Red", "Green", "Blue", "Silver", "Yellow", "Brown", "Purple", "Pink", "Orange",
           "Mixture", "Other")
GROUPS = (
    group("age", "", ("AgeLess16", "Age17-30", "Age31-45", "Age46-60", "AgeBiger60")),
    group("body", "Body", ("Fatter", "Fat", "Normal", "Thin", "Thiner")),
    group("role", "", ("Customer", "Employee")),
    group("shoes", "shoes-", ("Leather", "Sports", "Boots", "Cloth", "Sandals", "Casual", "Other")),
    # the release spells one upper-body colour 'up-ColorRed'
    Group("upper_color", tuple(("up-ColorRed" if c == "Red" else f"ub-Color{c}", c) for c in COLOURS)),
    group("lower_color", "lb-Color", COLOURS),
    group("shoes_color", "shoes-Color", COLOURS),
)


def read_rap2(path: Path, images: Path | None = None) -> Source:
    path = Path(path)
    rap = identify(load_mat(path), "RAP_annotation", path, "RAPv2")
    where = f"{path}: RAP_annotation"
    names = strings(field(rap, "name", where), f"{where}.name")
    data = numbers(field(rap, "data", where), f"{where}.data", ndim=2)
    all_names = strings(field(rap, "attribute", where), f"{where}.attribute")
    check_labels(data, len(names), all_names, f"{where}.data vs .name and .attribute")
    binary = [j for j in range(data.shape[1]) if np.isin(data[:, j], (0, 1, UNCERTAIN)).all()]
    selected = numbers(field(rap, "selected_attribute", where), f"{where}.selected_attribute") - 1
    not_binary = [int(j) + 1 for j in selected if j not in binary]
    if not_binary:
        raise AttrfitError(f"{where}.selected_attribute: names column(s) {not_binary[:5]} of data, which are not "
                           "binary attributes (values outside 0, 1, 2)")
    labels = data[:, binary].astype(np.int8)
    uncertain = int((labels[:, [binary.index(j) for j in selected]] == UNCERTAIN).sum())
    labels[labels == UNCERTAIN] = MISSING
    trials = cells(field(rap, "partition_attribute", where), f"{where}.partition_attribute")
    partitions = tuple(_trial(t, k, len(names), where) for k, t in enumerate(trials))
    identities, id_note = _identities(rap, len(names), where)
    notes = [id_note, f"{uncertain} uncertain label(s) (2) among the selected attributes became missing labels",
             f"{len(binary)} of the {len(all_names)} columns of data are binary attributes (--attributes all); "
             "viewpoint and the box coordinates are not"]
    image_root = Path(images) if images else _default_images(path)
    return Source("RAPv2", path, image_root, names, tuple(all_names[j] for j in binary), labels,
                  tuple(binary.index(j) for j in selected), identities, partitions, GROUPS, notes=tuple(notes))


def _trial(trial, k: int, n: int, where: str) -> Partition:
    w = f"{where}.partition_attribute{{{k + 1}}}"
    sides = {s: numbers(field(trial, f"{s}_index", w), f"{w}.{s}_index") for s in SIDES}
    return Partition("official" if k == 0 else f"official-{k + 1}", check_sides(sides, n, w, base=1),
                     f"RAP_annotation.mat partition_attribute trial {k + 1} of the five (image-level, not "
                     "identity-disjoint)")


def _identities(rap: dict, n: int, where: str) -> tuple[list[str] | None, str]:
    if "person_identity" not in rap:
        return None, "no person_identity field: no identities"
    ids = numbers(rap["person_identity"], f"{where}.person_identity")
    if len(ids) != n:
        raise AttrfitError(f"{where}.person_identity: {len(ids)} values for {n} images")
    known = ids > 0
    return ([str(i) if k else "" for i, k in zip(ids, known)],
            f"identities: {int(known.sum())} images of {len(set(ids[known]))} people; {int((~known).sum())} images "
            "have none (-1 distractor, -2 unknown): an empty person_id cell")


def _default_images(path: Path) -> Path:
    beside_folder = path.parent.parent / "RAP_dataset"
    return beside_folder if beside_folder.is_dir() else path.parent / "RAP_dataset"
