"""Stage 3c: the frames a list of boxes refers to, decoded once each, in order.

A source is one of:

- a **folder of frames** (``000001.jpg``, ``frame_42.png``, ...): a frame's number is the run of digits
  at the end of its file name, as MOTChallenge's ``img1/`` folders name them;
- a **video file**, decoded with PyAV (FFmpeg) from the optional ``video`` extra: frame 1 is the first
  frame decoded, as in MOTChallenge; decoding stops after the last frame a box needs;
- for a CSV of boxes, the **folder its image paths are relative to**;
- in Python, a **list of images** (frame i + 1 is item i) or a **dict** {frame: image}.

Frame files are decoded as training decodes images (:func:`attrfit.data.cache.open_rgb`: EXIF rotation,
RGB), at full resolution: box coordinates are pixels of the frame as shown. A video's frames are
the decoder's RGB pixels (a rotation tag in the container is not applied).

Example:
    >>> src = open_frames("MOT17-02/img1")  # doctest: +SKIP
    >>> for number, load in src.read([1, 2]): image = load()  # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, ImageOps

from attrfit.core.errors import AttrfitError
from attrfit.data.cache import BadImage, open_rgb, to_rgb

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VIDEO_EXTRA = "pip install 'attrfit[video]'"
_NUMBER = re.compile(r"(\d+)$")

Loader = Callable[[], Image.Image]  # decodes one frame (RGB) or raises BadImage


class FrameSource(Protocol):
    """Where frames come from. ``missing(keys)`` gives the indices of the keys it lacks (None: only decoding
    tells, a video); ``read(wanted)`` yields (key, loader) for the wanted keys it has, in the order given."""

    name: str

    def missing(self, keys: Sequence) -> list[int] | None: ...

    def paths(self, keys: Sequence) -> list[Path]: ...

    def describe(self) -> str: ...

    def read(self, wanted: Sequence) -> Iterator[tuple[object, Loader]]: ...


class FrameFolder:
    """Numbered image files in one folder (not searched recursively)."""

    def __init__(self, folder: Path):
        self.name = str(folder)
        self.files = _numbered(folder)

    def missing(self, keys: Sequence) -> list[int]:
        return [i for i, k in enumerate(keys) if k not in self.files]

    def paths(self, keys: Sequence) -> list[Path]:
        return list(self.files.values())

    def describe(self) -> str:
        return _span(self.files) if self.files else "no numbered image files"

    def read(self, wanted: Sequence) -> Iterator[tuple[int, Loader]]:
        for key in wanted:
            yield key, _file_loader(self.files[key])


class ImageFiles:
    """Frames named by image paths relative to a folder (a CSV of boxes)."""

    def __init__(self, root: Path):
        self.name = str(root)
        self.root = root

    def missing(self, keys: Sequence) -> list[int]:
        return [i for i, n in enumerate(keys) if not (self.root / n).is_file()]

    def paths(self, keys: Sequence) -> list[Path]:
        return [self.root / n for n in keys]

    def describe(self) -> str:
        return f"relative to {self.root}"

    def read(self, wanted: Sequence) -> Iterator[tuple[str, Loader]]:
        for key in wanted:
            yield key, _file_loader(self.root / key)


class VideoFile:
    """A video file, decoded in order by PyAV; checked (opened, a video stream found) when made."""

    def __init__(self, path: Path):
        self.name = str(path)
        self.path = path
        self.decoded = 0  # frames decoded by the last read
        av = import_av()
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise AttrfitError(f"{path}: no video stream in this file")
        except av.error.FFmpegError as e:
            raise AttrfitError(f"{path}: cannot be decoded as a video ({_reason(e)})") from None

    def missing(self, keys: Sequence) -> list[int] | None:
        """Frames before the first: missing at once; past the end: known once decoded (see :attr:`decoded`)."""
        return [i for i, k in enumerate(keys) if k < 1] or None

    def paths(self, keys: Sequence) -> list[Path]:
        return [self.path]

    def describe(self) -> str:
        return f"{self.decoded} frames, numbered from 1" if self.decoded else "its frames are numbered from 1"

    def read(self, wanted: Sequence) -> Iterator[tuple[int, Loader]]:
        av = import_av()
        want = set(wanted)
        last = max(want) if want else 0
        n = 0
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"  # FFmpeg's own decoding threads
                for frame in container.decode(stream):
                    n += 1
                    self.decoded = n
                    if n in want:
                        image = frame.to_image()  # RGB
                        yield n, (lambda image=image: image)
                    if n >= last:
                        return
        except av.error.FFmpegError as e:
            raise AttrfitError(f"{self.path}: cannot decode frame {n + 1} ({_reason(e)})") from None


class ImageList:
    """Images in memory: a sequence (frame i + 1 is item i) or a mapping {frame: image}."""

    def __init__(self, images: Sequence | Mapping, name: str = "frames"):
        self.name = name
        self.images = images
        self.keys = set(images) if isinstance(images, Mapping) else set(range(1, len(images) + 1))

    def missing(self, keys: Sequence) -> list[int]:
        return [i for i, k in enumerate(keys) if k not in self.keys]

    def paths(self, keys: Sequence) -> list[Path]:
        return []

    def describe(self) -> str:
        return _span(self.keys) if self.keys else "no images"

    def read(self, wanted: Sequence) -> Iterator[tuple[object, Loader]]:
        for key in wanted:
            item = self.images[key] if isinstance(self.images, Mapping) else self.images[key - 1]
            yield key, (lambda item=item: as_rgb(item))


def open_frames(source, csv_boxes: bool = False) -> FrameSource:
    """The frame source for ``source``: a folder, a video file, or images in memory; ``csv_boxes``: a folder
    that a CSV's image paths are relative to.

    >>> open_frames([np.zeros((4, 4, 3), np.uint8)]).describe()
    'frames 1 to 1'
    """
    if isinstance(source, (Sequence, Mapping, np.ndarray)) and not isinstance(source, (str, bytes)):
        return ImageList(source)
    path = Path(source)
    if csv_boxes:
        if not path.is_dir():
            raise AttrfitError(f"--frames {path}: not a folder; a CSV of boxes names image files relative to one")
        return ImageFiles(path)
    if path.is_dir():
        return FrameFolder(path)
    if path.is_file():
        return VideoFile(path)
    raise AttrfitError(f"--frames {path}: no such folder or video file")


def import_av():
    """PyAV, or one clear line naming the extra that installs it."""
    try:
        import av
    except ImportError:
        raise AttrfitError(f"reading a video needs PyAV, which is not installed: {VIDEO_EXTRA} "
                           "(or give a folder of frames)") from None
    return av


def as_rgb(item) -> Image.Image:
    """An image given in memory (PIL image, or uint8 H x W [x 3|4] array) as RGB, as training converts it."""
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or not (item.ndim == 2 or (item.ndim == 3 and item.shape[2] in (3, 4))):
            raise BadImage(f"a frame array must be uint8 H x W, H x W x 3 or H x W x 4, got {item.dtype} {item.shape}")
        item = Image.fromarray(np.ascontiguousarray(item))
    if not isinstance(item, Image.Image):
        raise BadImage(f"a frame must be a PIL image or a uint8 array, got {type(item).__name__}")
    return to_rgb(ImageOps.exif_transpose(item))


def _file_loader(path: Path) -> Loader:
    def load() -> Image.Image:
        if not path.is_file():
            raise BadImage("no such file")
        return open_rgb(path)

    return load


def _numbered(folder: Path) -> dict[int, Path]:
    files: dict[int, Path] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        p = Path(entry.path)
        m = _NUMBER.search(p.stem)
        if not m or p.suffix.lower() not in IMAGE_EXTENSIONS or not entry.is_file():
            continue
        n = int(m.group(1))
        if n in files:
            raise AttrfitError(f"--frames {folder}: {files[n].name} and {p.name} are both frame {n}; keep one")
        files[n] = p
    return files


def _span(keys) -> str:
    nums = sorted(keys)
    return f"frames {nums[0]} to {nums[-1]}" + (f" ({len(nums)} of them)" if len(nums) != nums[-1] - nums[0] + 1 else "")


def _reason(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e)
