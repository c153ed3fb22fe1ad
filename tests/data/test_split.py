import csv
import json

import pytest

from attrfit.core.errors import AttrfitError
from attrfit.data.split import cross_side_duplicates, load_split, make_split, save_split, verify_split
from attrfit.data.table import read_table


def test_fractions_and_disjoint(tiny):
    t = read_table(tiny)
    s = make_split(t, 0.2, 0.1, seed=0)
    sides = s.sides
    all_paths = sides["train"] + sides["val"] + sides["test"]
    assert sorted(all_paths) == sorted(t.paths)
    assert abs(len(sides["test"]) - 12) <= 3 and abs(len(sides["val"]) - 6) <= 3


def test_same_seed_byte_identical_file(tiny, tmp_path):
    t = read_table(tiny)
    a = save_split(make_split(t, seed=3), tmp_path / "a.json")
    b = save_split(make_split(read_table(tiny), seed=3), tmp_path / "b.json")
    assert a.read_bytes() == b.read_bytes()
    c = save_split(make_split(t, seed=4), tmp_path / "c.json")
    assert json.loads(c.read_text())["sides"] != json.loads(a.read_text())["sides"]


def test_never_overwritten_without_force(tiny, tmp_path):
    t = read_table(tiny)
    save_split(make_split(t), tmp_path / "s.json")
    with pytest.raises(AttrfitError, match="already exists"):
        save_split(make_split(t), tmp_path / "s.json")
    save_split(make_split(t, seed=1), tmp_path / "s.json", force=True)


def test_groups_never_straddle(tiny_groups):
    t = read_table(tiny_groups, group_column="pid")
    s = make_split(t, 0.2, 0.2, seed=0)
    group_of = dict(zip(t.paths, t.groups))
    sides_of_group = {}
    for side, paths in s.sides.items():
        for p in paths:
            sides_of_group.setdefault(group_of[p], set()).add(side)
    assert all(len(v) == 1 for v in sides_of_group.values())
    assert all(len(s.sides[k]) for k in ("train", "val", "test"))


def test_stratified_ratios(tmp_path):
    from helpers import write_tiny

    t = read_table(write_tiny(tmp_path, n=300, missing_every=0))
    s = make_split(t, 0.2, 0.1, stratify="color")
    for side in ("train", "test"):
        rows = [t.paths.index(p) for p in s.sides[side]]
        share = (t.labels[rows, 0] == 0).mean()
        assert abs(share - 1 / 3) < 0.03


def rewrite_csv(path, edit):
    rows = list(csv.DictReader(open(path)))
    rows = edit(rows)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


@pytest.mark.parametrize("edit, match", [
    (lambda rows: rows[:-1], "1 row.s. removed"),
    (lambda rows: [{**r, "color": "red"} if i == 0 else r for i, r in enumerate(rows)], "1 row.s. relabelled .e.g. img/0.png"),
])
def test_changed_table_is_refused(tiny, tmp_path, edit, match):
    s = make_split(read_table(tiny))
    rewrite_csv(tiny, edit)
    with pytest.raises(AttrfitError, match=match):
        verify_split(s, read_table(tiny))


def test_verify_returns_indices(tiny):
    t = read_table(tiny)
    idx = verify_split(make_split(t), t)
    assert sorted(sum((list(v) for v in idx.values()), [])) == list(range(len(t)))


def test_hand_edited_split_rejected(tiny, tmp_path):
    t = read_table(tiny)
    p = save_split(make_split(t), tmp_path / "s.json")
    d = json.loads(p.read_text())
    d["sides"]["train"].append(d["sides"]["test"][0])
    p.write_text(json.dumps(d))
    with pytest.raises(AttrfitError, match="on both"):
        load_split(p)
    p.write_text("{not json")
    with pytest.raises(AttrfitError, match="not a valid attrfit split"):
        load_split(p)


def test_exact_duplicates_across_sides(tiny):
    t = read_table(tiny)
    s = make_split(t, seed=0)
    a, b = s.sides["train"][0], s.sides["test"][0]
    (t.image_root / b).write_bytes((t.image_root / a).read_bytes())
    dups = cross_side_duplicates(t, s)
    assert {(d[1], d[3]) for d in dups} & {(a, b), (b, a)}
