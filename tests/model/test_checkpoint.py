import pytest
import torch

from attrfit.model import checkpoint
from attrfit.model.checkpoint import CorruptCheckpoint


def payload(v=1.0):
    return {"model": {"w": torch.full((3, 3), v)}, "progress": {"epoch": int(v)}, "config": {"a": [1, "x"]}}


def test_roundtrip(tmp_path):
    p = checkpoint.save(payload(), tmp_path / "last.pt")
    d = checkpoint.load(p)
    assert torch.equal(d["model"]["w"], torch.ones(3, 3)) and d["config"] == {"a": [1, "x"]}
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b[:-1] + bytes([b[-1] ^ 1]), lambda b: b""])
def test_corrupt_detected_and_falls_back(tmp_path, damage):
    p = tmp_path / "last.pt"
    checkpoint.save(payload(1.0), p, keep_previous=True)
    checkpoint.save(payload(2.0), p, keep_previous=True)
    p.write_bytes(damage(p.read_bytes()))
    with pytest.raises(CorruptCheckpoint):
        checkpoint.load(p)
    d, used = checkpoint.load_with_fallback(p)
    assert used.name == "last.prev.pt" and d["progress"]["epoch"] == 1


def test_failed_write_leaves_old_file(tmp_path, monkeypatch):
    p = checkpoint.save(payload(1.0), tmp_path / "best.pt")
    import os

    def no_space(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    from attrfit.core.errors import AttrfitError

    with pytest.raises(AttrfitError, match="No space left"):
        checkpoint.save(payload(2.0), p)
    monkeypatch.undo()
    assert checkpoint.load(p)["progress"]["epoch"] == 1
    assert not [f for f in tmp_path.iterdir() if f.name != "best.pt"]
