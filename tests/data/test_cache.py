import time

import numpy as np
import pytest
import torch
from PIL import Image

from attrfit.data.cache import decode_image, load_or_build, parse_size, BadImage
from attrfit.core.errors import AttrfitError
from attrfit.data.table import read_table


def test_builds_then_loads_from_cache(tiny, tmp_path):
    t = read_table(tiny)
    c1 = load_or_build(t.paths, t.abs_paths(), (16, 8), cache_dir=tmp_path / "c", progress=False)
    assert c1.images.shape == (60, 3, 16, 8) and c1.images.dtype == torch.uint8
    files = list((tmp_path / "c").glob("*.pt"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    c2 = load_or_build(t.paths, t.abs_paths(), (16, 8), cache_dir=tmp_path / "c", progress=False)
    assert torch.equal(c1.images, c2.images)
    assert files[0].stat().st_mtime_ns == mtime  # loaded, not rebuilt


def test_changed_image_or_size_rebuilds(tiny, tmp_path):
    t = read_table(tiny)
    load_or_build(t.paths, t.abs_paths(), (16, 8), cache_dir=tmp_path / "c", progress=False)
    load_or_build(t.paths, t.abs_paths(), (8, 8), cache_dir=tmp_path / "c", progress=False)
    time.sleep(0.01)
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(t.abs_path(0))
    c = load_or_build(t.paths, t.abs_paths(), (16, 8), cache_dir=tmp_path / "c", progress=False)
    assert len(list((tmp_path / "c").glob("*.pt"))) == 3
    assert int(c.images[0].max()) == 0


def test_modes_converted_to_rgb(tmp_path):
    cases = {
        "gray.png": Image.fromarray(np.full((10, 10), 200, np.uint8), "L"),
        "rgba.png": Image.fromarray(np.dstack([np.full((10, 10, 3), 255, np.uint8), np.zeros((10, 10), np.uint8)]), "RGBA"),
        "p.bmp": Image.fromarray(np.full((10, 10, 3), 30, np.uint8)).convert("P"),
        "i16.png": Image.fromarray(np.full((10, 10), 65535, np.uint16)),
        "tiny.jpg": Image.fromarray(np.full((1, 1, 3), 90, np.uint8)),
    }
    for name, im in cases.items():
        im.save(tmp_path / name)
        a = decode_image(tmp_path / name, (8, 4))
        assert a.shape == (8, 4, 3) and a.dtype == np.uint8, name
    assert decode_image(tmp_path / "gray.png", (8, 4))[0, 0].tolist() == [200] * 3
    assert decode_image(tmp_path / "rgba.png", (8, 4))[0, 0].tolist() == [127] * 3  # transparent -> grey
    assert decode_image(tmp_path / "i16.png", (8, 4))[0, 0].tolist() == [255] * 3


def test_exif_orientation_applied(tmp_path):
    a = np.zeros((10, 20, 3), np.uint8)
    a[:, :10] = 255  # left half white
    im = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    im.save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = decode_image(tmp_path / "r.jpg", (20, 10))
    assert out[:5].mean() > 200 and out[-5:].mean() < 50  # white is now on top


def test_pad_mode_keeps_aspect(tmp_path):
    Image.fromarray(np.full((10, 40, 3), 255, np.uint8)).save(tmp_path / "wide.png")
    out = decode_image(tmp_path / "wide.png", (40, 40), "pad")
    assert out[0, 20].tolist() == [127] * 3 and out[20, 20].tolist() == [255] * 3


@pytest.mark.parametrize("content", [b"", b"\xff\xd8\xff\xe0garbage", b"not an image"])
def test_bad_image_reported_by_path(tiny, tmp_path, content):
    t = read_table(tiny)
    t.abs_path(5).write_bytes(content)
    with pytest.raises(AttrfitError, match=r"1 of 60 images cannot be decoded, e\.g\. img/5\.png"):
        load_or_build(t.paths, t.abs_paths(), (8, 8), cache_dir=tmp_path / "c", progress=False)
    c = load_or_build(t.paths, t.abs_paths(), (8, 8), cache_dir=tmp_path / "c", skip_bad=True, progress=False)
    assert len(c.paths) == 59 and "img/5.png" not in c.paths and c.bad[0][0] == "img/5.png"


def test_truncated_jpeg(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "a.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImage):
        decode_image(tmp_path / "a.jpg", (8, 8))


def test_parse_size():
    assert parse_size("128x64") == (128, 64)
    with pytest.raises(AttrfitError):
        parse_size("big")
