"""The one atomic writer (core/files.py): a failed write leaves the old file and no temp, a full disk is one line."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from helpers import full_disk
import torch


from attrfit.core import files

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--size", "16x16", "--width", "8", "--stages", "2", "--batch-size", "16", "--lr", "0.05", "--seed", "1",
        "--precision", "fp32", "--no-report", "--quiet"]
needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")


@pytest.mark.parametrize("exc, raised", [
    (OSError(errno.ENOSPC, "No space left on device"), files.WriteFailed),
    (OSError(errno.EROFS, "Read-only file system"), files.WriteFailed),
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"), files.WriteFailed),
    (RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"), files.WriteFailed),
    (KeyboardInterrupt(), KeyboardInterrupt),
    (ValueError("a bug"), ValueError),  # not a disk problem: keeps its type (and traceback)
])
def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path, exc, raised):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def write(f):
        f.write(b"half of the new")
        raise exc

    with pytest.raises(raised) as info:
        files.atomic_write(target, write, "the thing")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]
    if raised is files.WriteFailed:
        assert str(info.value).startswith(f"cannot write the thing {target}: ") and "\n" not in str(info.value)
        assert "disk is" in str(info.value) and "full" in str(info.value) or "read-only" in str(info.value)


@needs_dev_full
def test_a_real_enospc_is_one_line_and_the_old_file_stays(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    files.write_json(target, {"v": 1})
    full_disk(monkeypatch)
    with pytest.raises(files.WriteFailed, match="No space left on device.*free some space"):
        files.write_json(target, {"v": 2})
    with pytest.raises(files.WriteFailed, match="disk is.*full"):
        files.atomic_write(tmp_path / "t.pt", lambda f: torch.save({"x": torch.zeros(10000)}, f))
    assert json.loads(target.read_text()) == {"v": 1}
    assert os.listdir(tmp_path) == ["results.json"]


def test_writes_replace_atomically_keep_the_mode_and_follow_symlinks(tmp_path):
    real = tmp_path / "real.txt"
    real.write_text("old")
    real.chmod(0o640)
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    files.write_text(link, "new")
    assert link.is_symlink() and real.read_text() == "new"
    assert real.stat().st_mode & 0o777 == 0o640


def test_threads_writing_one_file_at_once_never_collide(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    target = tmp_path / "c.bin"
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: files.write_bytes(target, bytes([i]) * 100_000), range(16)))
    data = target.read_bytes()
    assert len(data) == 100_000 and len(set(data)) == 1  # one writer's bytes, whole
    assert os.listdir(tmp_path) == ["c.bin"]


def test_every_write_goes_through_the_atomic_writer():
    """No module renames temp files by itself (the one helper fsyncs and cleans up); checkpoint.py
    only moves the old last.pt aside, inside the helper's write."""
    for path in (ROOT / "src" / "attrfit").glob("*.py"):
        text = path.read_text()
        allowed = {"files.py": 1, "checkpoint.py": 1}.get(path.name, 0)
        assert text.count("os.replace(") + text.count(".replace(out)") <= allowed, path.name
        assert path.name == "files.py" or (".tmp\"" not in text and ".tmp{" not in text), path.name
