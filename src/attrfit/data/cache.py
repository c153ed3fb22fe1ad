"""Stage 3: decode every image once into one uint8 tensor N x 3 x H x W.

The cache is a single ``.pt`` file keyed by what produced it: each image's path, file
size, mtime, ctime and inode, the target size and the resize mode. A second run with the
same key loads it (memory-mapped) in about a second; any change rebuilds it. Training then
never touches a JPEG again. It is written atomically (:mod:`attrfit.core.files`): two processes
building the same cache each write their own temp file and the last rename wins, and a
cache that cannot be written (full disk, read-only folder) only costs the next run time.

Decoding: Pillow, EXIF orientation applied, grayscale/palette/RGBA/16-bit converted to
RGB, resized with a box/bilinear filter. A corrupt or unreadable image is reported by
path; ``skip_bad`` drops it instead of stopping.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from attrfit.core import files
from attrfit.core.errors import AttrfitError
from attrfit.core.progress import progress_bar
from attrfit.data.crop import PAD_VALUE, crop_resize

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
RESIZE_MODES = ("stretch", "pad")


@dataclass
class ImageCache:
    images: torch.Tensor  # uint8, N x 3 x H x W, rows in the order of `paths`
    paths: list[str]  # image_path values (as in the CSV)
    size: tuple[int, int]  # (H, W)
    resize: str
    key: str
    bad: list[tuple[str, str]]  # (image_path, reason) dropped by skip_bad


class BadImage(Exception):
    """An image that Pillow cannot decode (internal; surfaced as AttrfitError or skipped)."""


def parse_size(text: str) -> tuple[int, int]:
    """'128x64' -> (128, 64) as (H, W).

    >>> parse_size("128x64")
    (128, 64)
    """
    try:
        h, w = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise AttrfitError(f"size '{text}' is not HxW, e.g. 128x64") from None
    if not (8 <= h <= 4096 and 8 <= w <= 4096):
        raise AttrfitError(f"size '{text}': each side must be between 8 and 4096 pixels")
    return h, w


def decode_image(path: Path, size: tuple[int, int], resize: str = "stretch") -> np.ndarray:
    """Decode one image file to an H x W x 3 uint8 array, or raise BadImage with the reason."""
    h, w = size
    return np.array(resize_image(open_rgb(path, (w * 2, h * 2)), (h, w), resize))  # writable copy


def open_rgb(path: Path, draft: tuple[int, int] | None = None) -> Image.Image:
    """Decode one image file to an RGB image, EXIF rotation applied, or raise BadImage with the reason.

    ``draft`` (W, H) lets a big JPEG decode at a reduced scale, never below that size: much faster.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if draft and im.format == "JPEG":
                    im.draft("RGB", draft)
                return to_rgb(ImageOps.exif_transpose(im))  # a loaded copy: the file can close
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        reason = "empty file" if path.is_file() and path.stat().st_size == 0 else f"{type(e).__name__}: {e}"
        raise BadImage(reason) from None


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: 16-bit and float scaled down, alpha composited on grey."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (PAD_VALUE,) * 3 + (255,))
        return Image.alpha_composite(bg, im).convert("RGB")
    return im.convert("RGB")


def resize_image(im: Image.Image, size: tuple[int, int], mode: str) -> Image.Image:
    """An RGB image to (H, W): "stretch" ignores the aspect ratio, "pad" letterboxes on grey.

    The rule is :func:`attrfit.data.crop.crop_resize` with the whole image as the region, the one
    that cuts a detector's boxes from video frames too.
    """
    return crop_resize(im, None, size, mode)


def cache_key(abs_paths: list[Path], size: tuple[int, int], resize: str) -> str:
    """sha256 of (format, size, resize mode, each file's path, size in bytes, mtime, ctime and inode).

    ctime and inode are there because ``cp -p`` and ``rsync -a`` copy a new image over an old
    one keeping its mtime (and often its size); neither can set the ctime, and rsync writes a
    new inode. Path bytes are hashed as the file system has them (names need not be UTF-8).
    """
    h = hashlib.sha256(f"attrfit-cache-{CACHE_FORMAT}|{size[0]}x{size[1]}|{resize}".encode())
    for p in abs_paths:
        h.update(b"\x1e" + os.fsencode(p))
        try:
            st = p.stat()
            h.update(f"\x1f{st.st_size}\x1f{st.st_mtime_ns}\x1f{st.st_ctime_ns}\x1f{st.st_ino}".encode())
        except OSError:
            h.update(b"\x1fmissing")
    return h.hexdigest()


def default_cache_dir() -> Path:
    return Path(os.environ.get("ATTRFIT_CACHE_DIR") or Path.home() / ".cache" / "attrfit")


def cache_folder(cache_dir: str | Path | None) -> Path:
    """The cache folder, refused at once (before any decoding) when a file is in its place."""
    folder = Path(cache_dir or default_cache_dir())
    if folder.exists() and not folder.is_dir():
        source = "--cache-dir" if cache_dir else "$ATTRFIT_CACHE_DIR" if os.environ.get("ATTRFIT_CACHE_DIR") else "the cache"
        raise AttrfitError(f"{source} {folder} is a file, not a folder; give a folder for the image cache")
    return folder


def load_or_build(
    paths: list[str],
    abs_paths: list[Path],
    size: tuple[int, int],
    resize: str = "stretch",
    cache_dir: str | Path | None = None,
    skip_bad: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> ImageCache:
    """Return the decoded images, from the cache file when its key matches, else decode and save.

    >>> c = load_or_build(table.paths, table.abs_paths(), (128, 64))  # doctest: +SKIP
    >>> c.images.shape  # doctest: +SKIP
    torch.Size([19000, 3, 128, 64])
    """
    if resize not in RESIZE_MODES:
        raise AttrfitError(f"resize mode '{resize}' unknown; choose one of {', '.join(RESIZE_MODES)}")
    key = cache_key(abs_paths, size, resize)
    file = cache_folder(cache_dir) / f"{key[:24]}_{size[0]}x{size[1]}_{resize}.pt"
    cached = _load(file, key, skip_bad)
    if cached is not None:
        log.info("loaded %d images from cache %s", len(cached.paths), file)
        return cached
    cache = build(paths, abs_paths, size, resize, key, skip_bad, workers, progress)
    _save(cache, file)
    return cache


def build(paths, abs_paths, size, resize, key, skip_bad, workers, progress) -> ImageCache:
    n = len(paths)
    images = torch.empty((n, 3, size[0], size[1]), dtype=torch.uint8)
    ok = np.ones(n, dtype=bool)
    bad: list[tuple[str, str]] = []

    def work(i: int) -> None:
        try:
            images[i] = torch.from_numpy(decode_image(abs_paths[i], size, resize)).permute(2, 0, 1)
        except BadImage as e:
            ok[i] = False
            bad.append((paths[i], str(e)))

    workers = workers or min(8, (os.cpu_count() or 1) + 1)
    with ThreadPoolExecutor(workers) as pool:  # Pillow releases the GIL while decoding
        for _ in progress_bar(pool.map(work, range(n)), total=n, desc="decoding images", enabled=progress):
            pass
    bad.sort()
    if bad and not skip_bad:
        listed = "; ".join(f"{p} ({r})" for p, r in bad[:3])
        raise AttrfitError(
            f"{len(bad)} of {n} images cannot be decoded, e.g. {listed}. Fix or remove them, or pass "
            "--skip-bad-images to drop them from every side"
        )
    if bad:
        log.warning("dropping %d unreadable image(s): %s", len(bad), "; ".join(f"{p} ({r})" for p, r in bad[:5]))
        keep = torch.from_numpy(ok)
        images = images[keep]
        paths = [p for p, k in zip(paths, ok) if k]
    return ImageCache(images, list(paths), tuple(size), resize, key, bad)


def _save(cache: ImageCache, file: Path) -> None:
    payload = {
        "format": CACHE_FORMAT,
        "key": cache.key,
        "images": cache.images,
        "paths": cache.paths,
        "size": list(cache.size),
        "resize": cache.resize,
        "bad": cache.bad,
    }
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        files.atomic_write(file, lambda f: torch.save(payload, f), "the image cache")
    except OSError as e:
        log.warning("could not write the image cache %s (%s); continuing without it", file, e.strerror or e)
    except files.WriteFailed as e:  # a full disk, say: the cache only saves time, so the run goes on
        log.warning("could not write %s; continuing without it", str(e).removeprefix("cannot write "))


def _load(file: Path, key: str, skip_bad: bool) -> ImageCache | None:
    if not file.is_file():
        return None
    try:
        d = torch.load(file, mmap=True, weights_only=True)
    except Exception as e:  # a damaged cache is rebuilt, never trusted
        log.warning("ignoring unreadable cache %s (%s)", file, e)
        return None
    if d.get("format") != CACHE_FORMAT or d.get("key") != key:
        return None
    bad = [tuple(b) for b in d["bad"]]
    if bad and not skip_bad:
        return None  # the build would have refused; rebuild to report the bad images again
    return ImageCache(d["images"], list(d["paths"]), tuple(d["size"]), d["resize"], key, bad)
