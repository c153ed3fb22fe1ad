"""PA-100k (Liu et al., HydraPlus-Net, ICCV 2017): ``annotation.mat``.

Top-level variables (as the toolkits read them: pedestrian-attribute-recognition-pytorch's
``transform_pa100k.py``, Rethinking_of_PAR's ``format_pa100k.py``): ``attributes`` (26 x 1 cell
of names), ``train_images_name`` / ``val_images_name`` / ``test_images_name`` (80000 / 10000 /
10000 x 1 cells of file names such as ``000001.jpg``) and ``train_label`` / ``val_label`` /
``test_label`` (N x 26, 0/1). The official partition is the three lists themselves; the images
sit in ``data/`` beside the file in the toolkits' layout. There are no identities.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from attrfit.core.errors import AttrfitError
from attrfit.data.formats.matfile import load_mat, numbers, strings
from attrfit.data.formats.source import SIDES, Partition, Source, check_labels, group, identify

GROUPS = (
    group("age", "Age", ("Less18", "18-60", "Over60")),
    group("orientation", "", ("Front", "Side", "Back")),
    group("sleeve", "", ("ShortSleeve", "LongSleeve")),
)


def read_pa100k(path: Path, images: Path | None = None) -> Source:
    path = Path(path)
    top = load_mat(path)
    identify(top, "train_images_name", path, "PA-100k")
    attributes = tuple(strings(_var(top, "attributes", path), f"{path}: attributes"))
    names, labels, sides, start = [], [], {}, 0
    for side in SIDES:
        side_names = strings(_var(top, f"{side}_images_name", path), f"{path}: {side}_images_name")
        side_labels = numbers(_var(top, f"{side}_label", path), f"{path}: {side}_label", ndim=2)
        check_labels(side_labels, len(side_names), attributes, f"{path}: {side}_label vs {side}_images_name")
        names += side_names
        labels.append(side_labels)
        sides[side] = np.arange(start, start + len(side_names))
        start += len(side_names)
    labels = np.concatenate(labels)
    if not np.isin(labels, (0, 1)).all():
        raise AttrfitError(f"{path}: the label arrays hold values other than 0 and 1")
    twice = len(names) - len(set(names))
    if twice:
        raise AttrfitError(f"{path}: {twice} image name(s) are listed twice across train/val/test_images_name")
    image_root = Path(images) if images else path.parent / "data"
    official = Partition("official", sides, "PA-100k annotation.mat: train/val/test_images_name (80000/10000/10000 "
                         "in the release; image-level, the dataset has no identities)")
    return Source("PA-100k", path, image_root, names, attributes, labels.astype(np.int8),
                  tuple(range(len(attributes))), None, (official,), GROUPS)


def _var(top: dict, name: str, path: Path):
    if name not in top:
        raise AttrfitError(f"{path}: has no variable '{name}' (it holds {', '.join(top)})")
    return top[name]
