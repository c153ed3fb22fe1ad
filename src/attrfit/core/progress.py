"""Progress bars on stderr (tqdm), never on stdout, so ``--json`` output stays clean.

``--quiet`` (``enabled=False``) or ``ATTRFIT_PROGRESS=0`` turns them off."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

from tqdm import tqdm


def progress_bar(iterable: Iterable | None = None, total: int | None = None, desc: str = "", enabled: bool = True, **kw):
    """A tqdm bar on stderr; ``enabled=False`` (or ATTRFIT_PROGRESS=0) makes it a no-op wrapper."""
    if os.environ.get("ATTRFIT_PROGRESS") == "0":
        enabled = False
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        disable=not enabled,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5,
        leave=False,
        **kw,
    )
