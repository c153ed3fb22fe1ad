import numpy as np
import pytest

from attrfit.core.errors import AttrfitError
from attrfit.data.table import read_table
from attrfit.data.schema import Schema


def write(p, text, encoding="utf-8"):
    p.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return p


def make_imgs(root, names):
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        (root / n).write_bytes(b"x")


def test_reads_heads_schema_and_missing(tiny):
    t = read_table(tiny)
    assert t.schema.heads == ("color", "bright")
    assert t.schema.classes["color"] == ("blue", "green", "red")
    assert (t.labels[:, 1] == -1).sum() == sum(1 for i in range(60) if i % 7 == 3)
    assert t.labels.dtype == np.int64


def test_class_names_with_slashes_spaces_plus(tmp_path):
    make_imgs(tmp_path, ["a.jpg", "b.jpg", "c.jpg"])
    csv = write(tmp_path / "l.csv", 'filename,bag,age,image_path\nx,Daily/Office/Work Bag,55+,a.jpg\n'
                'y,"None",<30,b.jpg\nz,"Grocery/Home/Plastic Bag, big",55+,c.jpg\n')
    t = read_table(csv)
    assert t.schema.heads == ("bag", "age")  # filename ignored by default
    assert "Grocery/Home/Plastic Bag, big" in t.schema.classes["bag"]
    assert t.schema.classes["age"] == ("<30", "55+")  # ranges in natural order


def test_bom_and_crlf(tmp_path):
    make_imgs(tmp_path, ["a.jpg", "b.jpg"])
    csv = write(tmp_path / "l.csv", "\ufeffimage_path,g\r\na.jpg,m\r\nb.jpg,f\r\n")
    assert read_table(csv).schema.heads == ("g",)


@pytest.mark.parametrize(
    "text, match",
    [
        ("path,g\na.jpg,m\nb.jpg,f\n", "no 'image_path' column"),
        ("image_path,g\na.jpg,m\na.jpg,f\n", "duplicate image_path"),
        ("image_path,g\na.jpg,m\nb.jpg,m\n", "head 'g' has 1 class"),
        ("image_path,g\na.jpg,m,extra\nb.jpg,f\n", "row 2 has 3 fields"),
        ("image_path,g\n", "no data rows"),
        ("", "empty"),
    ],
)
def test_clear_errors(tmp_path, text, match):
    make_imgs(tmp_path, ["a.jpg", "b.jpg"])
    with pytest.raises(AttrfitError, match=match):
        read_table(write(tmp_path / "l.csv", text))


def test_not_a_csv(tmp_path):
    with pytest.raises(AttrfitError, match="not UTF-8|NUL|not a valid CSV|no 'image_path'"):
        read_table(write(tmp_path / "l.csv", bytes(range(256)) * 4))


def test_non_utf8_names_line(tmp_path):
    make_imgs(tmp_path, ["a.jpg", "b.jpg"])
    with pytest.raises(AttrfitError, match="line 3 is not UTF-8"):
        read_table(write(tmp_path / "l.csv", b"image_path,g\na.jpg,m\nb.jpg,caf\xe9\n"))


def test_missing_files_counted_and_listed(tmp_path):
    make_imgs(tmp_path, ["a.jpg"])
    csv = write(tmp_path / "l.csv", "image_path,g\na.jpg,m\nb.jpg,f\nc.jpg,f\n")
    with pytest.raises(AttrfitError, match=r"2 of 3 image files .* missing .* b\.jpg, c\.jpg"):
        read_table(csv)


def test_images_root_option(tmp_path):
    make_imgs(tmp_path / "elsewhere", ["a.jpg", "b.jpg"])
    csv = write(tmp_path / "l.csv", "image_path,g\na.jpg,m\nb.jpg,f\n")
    assert len(read_table(csv, images=tmp_path / "elsewhere")) == 2


def test_heads_and_ignore_and_group(tiny_groups):
    t = read_table(tiny_groups, group_column="pid")
    assert t.schema.heads == ("color", "bright") and t.groups[0] == "p0"
    assert read_table(tiny_groups, heads=["bright"]).schema.heads == ("bright",)
    assert read_table(tiny_groups, ignore_columns=["pid", "bright"]).schema.heads == ("color",)
    with pytest.raises(AttrfitError, match="--group-column 'nope'"):
        read_table(tiny_groups, group_column="nope")


def test_unknown_class_against_saved_schema(tmp_path):
    make_imgs(tmp_path, ["a.jpg", "b.jpg"])
    csv = write(tmp_path / "l.csv", "image_path,g\na.jpg,m\nb.jpg,x\n")
    schema = Schema(("g",), {"g": ("f", "m")})
    with pytest.raises(AttrfitError, match="row 3, column 'g': unknown class 'x'"):
        read_table(csv, schema=schema)


def test_schema_json_roundtrip(tmp_path, tiny):
    s = read_table(tiny).schema
    s.save(tmp_path / "schema.json")
    assert Schema.load(tmp_path / "schema.json") == s
    other = Schema(("color",), {"color": ("blue", "red")})
    assert s.differences(other)
