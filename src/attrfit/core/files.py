"""Writing files safely: every file attrfit writes goes through here.

A write goes to a temp file in the target's folder, is flushed and fsynced, then renamed
over the target (``os.replace``), and the folder is fsynced. So a crash, a full disk or
Ctrl-C leaves either the old file or the new one, never half of one, and the temp file
is removed on any failure. Disk errors (``OSError``; the ``RuntimeError`` torch raises
when its writer hits a full disk) become one :class:`WriteFailed` line that says why.

Where an output a user names (``--out``) may go is decided by :mod:`attrfit.core.outputs`,
before the work starts.

Example:
    >>> write_json(Path("run/results.json"), {"accuracy": 0.9})  # doctest: +SKIP
    >>> with atomic_open(Path("out.csv"), "predictions", text=True) as f:  # doctest: +SKIP
    ...     f.write("a,b\\n")
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from attrfit.core.errors import AttrfitError

_counter = itertools.count()  # temp names unique per process and call: threads may write beside each other

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")  # read as images

# How torch's zip writer reports a failed write (it swallows the OSError): a full disk, a quota, an I/O error.
TORCH_WRITE_FAILURES = ("PytorchStreamWriter failed", "file write failed", "unexpected pos", "open file failed")

REASONS = {
    errno.ENOSPC: "the disk is full; free some space and run the command again",
    errno.EDQUOT: "the disk quota is used up; free some space and run the command again",
    errno.EROFS: "the file system is read-only; choose another place",
    errno.EACCES: "permission denied; choose a place you can write to",
    errno.EPERM: "not permitted; choose a place you can write to",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.ENOENT: "its folder does not exist or cannot hold files",
    errno.EISDIR: "it is a folder; give a file name",
    errno.ENAMETOOLONG: "the name is too long",
}


class WriteFailed(AttrfitError):
    """A file could not be written (disk full, read-only, permission, ...); nothing was left half-written."""


def write_error(e: BaseException, path: Path, what: str = "", hint: str = "") -> WriteFailed | None:
    """The one-line error for a failed write of ``path``, or None when ``e`` is not a disk problem (a bug)."""
    if isinstance(e, OSError):
        strerror = e.strerror or str(e)
        reason = f"{strerror} ({REASONS[e.errno]})" if e.errno in REASONS else strerror
    elif isinstance(e, RuntimeError) and any(s in str(e) for s in TORCH_WRITE_FAILURES):
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        reason = f"the write failed ({first}); the disk is probably full: free some space and run the command again"
    else:
        return None
    name = f"{what} {path}" if what else str(path)
    return WriteFailed(f"cannot write {name}: {reason}" + (f"; {hint}" if hint else ""))


def temp_path(path: Path) -> Path:
    """A hidden temp name beside ``path``: ``.NAME.tmpPID-N`` (hashed when NAME is too long to extend)."""
    name = path.name if len(os.fsencode(path.name)) <= 200 else hashlib.sha1(os.fsencode(path.name)).hexdigest()
    return path.with_name(f".{name}.tmp{os.getpid()}-{next(_counter)}")


def _target(path: Path) -> Path:
    """Where a write of ``path`` lands: a symlink is followed, so the link stays and its target is replaced."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _create(tmp: Path, text: bool = False, **open_args) -> IO:
    """Create the temp file, never an existing one ("x"); the umask sets its mode, as for any new file."""
    return open(tmp, "x" if text else "xb", **open_args)  # noqa: SIM115 (closed by the caller's with)


def _discard(tmp: Path) -> None:
    try:
        tmp.unlink()
    except OSError:
        pass  # never created, or its folder vanished: nothing to clean


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: some file systems refuse fsync on folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _keep_mode(target: Path, tmp: Path) -> None:
    """A replaced file keeps its permission bits (e.g. a group-readable cache stays group-readable)."""
    try:
        os.chmod(tmp, target.stat().st_mode & 0o7777)
    except OSError:
        pass  # no old file: the umask decided


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, what: str = "", text: bool = False, hint: str = "",
                before_replace: Callable[[], object] | None = None, durable: bool = True,
                **open_args) -> Iterator[IO]:
    """A file object whose contents replace ``path`` only when the ``with`` block ends without error.

    ``text`` opens it in text mode (``open_args``: encoding, newline, errors). On any
    exception, KeyboardInterrupt included, the temp file is removed and ``path`` is
    untouched; disk errors are raised as :class:`WriteFailed` (``what`` names the file
    in the message, ``hint`` is appended to it). ``before_replace`` runs once the new
    contents are safely on disk, just before the rename (e.g. to keep the old file aside).
    ``durable=False`` skips the fsyncs: still never half a file, but a power cut may lose it.
    """
    target = _target(Path(path))
    tmp = temp_path(target)
    try:
        with _create(tmp, text, **open_args) as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        _keep_mode(target, tmp)
        if before_replace is not None:
            before_replace()
        os.replace(tmp, target)
    except BaseException as e:
        _discard(tmp)
        err = write_error(e, target, what, hint)
        if err is None:
            raise
        raise err from None
    if durable:
        fsync_dir(target.parent)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object], what: str = "",
                 hint: str = "") -> Path:
    """Call ``write(f)`` with a binary file that atomically becomes ``path``; return ``path``.

    Example:
        >>> atomic_write(Path("cache.pt"), lambda f: torch.save(payload, f), "the image cache")  # doctest: +SKIP
    """
    with atomic_open(path, what, hint=hint) as f:
        write(f)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes, what: str = "", hint: str = "", durable: bool = True) -> Path:
    with atomic_open(path, what, hint=hint, durable=durable) as f:
        f.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, what: str = "", hint: str = "") -> Path:
    return write_bytes(path, text.encode("utf-8", "surrogateescape"), what, hint)


def write_json(path: str | os.PathLike, obj, what: str = "", hint: str = "") -> Path:
    """Indented UTF-8 JSON; file names that are not valid UTF-8 are kept as ``\\udcXX`` escapes."""
    text = json.dumps(obj, indent=1, ensure_ascii=False, default=str) + "\n"
    return write_bytes(path, text.encode("utf-8", "backslashreplace"), what, hint)


# ---------------------------------------------------------------- checking outputs before the work


def make_folder(folder: Path, what: str = "folder") -> Path:
    """``mkdir -p`` with one clear line when it cannot be made (a file in the way, read-only, ...)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise AttrfitError(f"cannot make the {what} {folder}: {blocker(folder) or folder} is a file, not a folder") from None
    except OSError as e:
        raise write_error(e, folder, f"the {what}") from None
    return folder


def blocker(folder: Path) -> Path | None:
    """The first part of ``folder`` that exists but is not a folder (None when there is none)."""
    for p in [*reversed(folder.parents), folder]:
        if p.exists() and not p.is_dir():
            return p
    return None


def cannot_create_in(folder: Path) -> str | None:
    """Why no file can be created in ``folder`` (None when one can): tried, not guessed from mode bits."""
    tmp = temp_path(folder / "probe")
    try:
        _create(tmp).close()
        tmp.unlink()
    except OSError as e:
        return f"{e.strerror or e}" + (f" ({REASONS[e.errno]})" if e.errno in REASONS else "")
    return None


def probe_folder(folder: Path, what: str = "output") -> None:
    """Fail now, not after the work, when no file can be created in ``folder``."""
    reason = cannot_create_in(folder)
    if reason:
        raise AttrfitError(f"cannot write the {what} in {folder}: {reason}")


def same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
