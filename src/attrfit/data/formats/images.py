"""Finding a dataset's images on disk: each name resolved to a file, and each file checked to open.

A name is found as written, or, when that file is absent, as the one file of the same folder
and stem with another image suffix (the toolkits' copies of PETA and RAP re-encode images:
``0001.bmp`` becomes ``0001.png``). Each folder is listed once, so 100,000 names cost 100,000
dictionary look-ups, not stats. A found file is opened with Pillow (its header only: a file
that is no image, or an empty one, fails here; a file damaged further in is the image cache's
to find, see ``--skip-bad-images``).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".webp")


@dataclass(frozen=True)
class Found:
    """Per name: its file (None when missing or unreadable); and the names that failed, with why."""

    files: list[Path | None]
    missing: list[str]
    unreadable: list[tuple[str, str]]
    other_suffix: int  # names found under another image suffix


class _Listing:
    """Folder listings, made once each: name -> exists, stem -> names."""

    def __init__(self) -> None:
        self._names: dict[Path, set[str]] = {}
        self._stems: dict[Path, dict[str, list[str]]] = {}

    def _load(self, folder: Path) -> None:
        try:
            names = set(os.listdir(folder))
        except OSError:
            names = set()
        stems: dict[str, list[str]] = {}
        for n in names:
            stem, suffix = os.path.splitext(n)
            if suffix.lower() in SUFFIXES:
                stems.setdefault(stem, []).append(n)
        self._names[folder], self._stems[folder] = names, stems

    def find(self, root: Path, name: str) -> tuple[Path | None, bool]:
        """(the file, whether it has another suffix than the name)."""
        path = root / name
        folder = path.parent
        if folder not in self._names:
            self._load(folder)
        if path.name in self._names[folder]:
            return path, False
        same_stem = self._stems[folder].get(os.path.splitext(path.name)[0], [])
        return (folder / same_stem[0], True) if len(same_stem) == 1 else (None, False)


def find_images(root: Path, names: list[str], check: bool = True) -> Found:
    """Resolve each of ``names`` under ``root``; with ``check``, open each found file's header.

    >>> found = find_images(Path("PA100k/data"), ["000001.jpg"])  # doctest: +SKIP
    >>> found.missing  # doctest: +SKIP
    []
    """
    listing = _Listing()
    files, missing, renamed = [], [], 0
    for name in names:
        path, other = listing.find(Path(root), name) if name else (None, False)
        files.append(path)
        renamed += other
        if path is None:
            missing.append(name)
    unreadable = []
    if check:
        with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 1)) as pool:
            problems = list(pool.map(_problem, files))
        for k, why in enumerate(problems):
            if why:
                unreadable.append((names[k], why))
                files[k] = None
    return Found(files, missing, unreadable, renamed)


def _problem(path: Path | None) -> str:
    """Why ``path`` is no image Pillow can open ('' when it opens; missing files are counted elsewhere)."""
    if path is None:
        return ""
    try:
        with Image.open(path) as im:
            im.size  # noqa: B018 (the header is parsed on open; size proves it)
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ValueError ...
        return f"{type(e).__name__}: {e}"
    return ""
