"""The field's public pedestrian-attribute datasets, read from their own release files.

One reader per format (``peta``, ``pa100k``, ``rap``, ``market``); each returns a
:class:`~attrfit.data.formats.source.Source`, and :mod:`~attrfit.data.formats.convert` writes
the labels CSV attrfit trains on and each official partition as an attrfit split file
(``attrfit dataset NAME SRC --out DIR``; docs/datasets.md lists the formats and their sources).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from attrfit.core.errors import AttrfitError


@dataclass(frozen=True)
class Dataset:
    name: str  # the command's NAME
    title: str
    source: str  # what SRC is
    reader: Callable  # (src, images[, val_fraction, seed]) -> Source
    carves_val: bool = False  # its official partition has no val side


def datasets() -> dict[str, Dataset]:
    """The supported datasets by the name ``attrfit dataset`` takes."""
    from attrfit.data.formats.market import read_duke, read_market
    from attrfit.data.formats.pa100k import read_pa100k
    from attrfit.data.formats.peta import read_peta
    from attrfit.data.formats.rap import read_rap2

    return {d.name: d for d in (
        Dataset("peta", "PETA", "the release's 'PETA dataset' folder (Label.txt per subset), or PETA.mat", read_peta),
        Dataset("pa100k", "PA-100k", "annotation.mat", read_pa100k),
        Dataset("rapv2", "RAPv2", "RAP_annotation.mat", read_rap2),
        Dataset("market1501", "Market-1501 attributes", "market_attribute.mat", read_market, carves_val=True),
        Dataset("dukemtmc", "DukeMTMC-reID attributes", "duke_attribute.mat", read_duke, carves_val=True),
    )}


def dataset(name: str) -> Dataset:
    known = datasets()
    if name not in known:
        raise AttrfitError(f"unknown dataset '{name}'; attrfit reads {', '.join(known)}")
    return known[name]
