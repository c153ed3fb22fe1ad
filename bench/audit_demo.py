"""How well `attrfit audit-labels` finds the demo's known label flips (docs/experiments/audit.md).

The demo data flips a known share of its labels (attrfit.data.demo.add_label_noise, from the seed),
so the flipped cells can be recomputed. This script reads the suspects CSV that
`attrfit audit-labels` wrote for a demo dataset and prints, per head, the precision and recall
of the suspects against the true flips on the audited (train and val) rows.

At the audit's default settings (the plain recipe, 16 epochs at LR 0.4, 4 folds), for 1,500 and 4,000 images:

    attrfit demo-data demo1500 --n 1500 --seed 16
    attrfit audit-labels demo1500/annotations.csv --size 64x64 --threads 1 --out demo1500_issues.csv
    python bench/audit_demo.py demo1500 demo1500_issues.csv --n 1500 --seed 16 --json demo1500_audit.json

    attrfit demo-data demo4000 --n 4000 --seed 16
    attrfit audit-labels demo4000/annotations.csv --size 64x64 --threads 1 --out demo4000_issues.csv
    python bench/audit_demo.py demo4000 demo4000_issues.csv --n 4000 --seed 16 --json demo4000_audit.json

A head the audit cannot judge (its out-of-fold model does not beat chance) has no suspects: its precision
is n/a and its recall 0, and the table says so.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from attrfit.data.demo import add_label_noise, sample_labels
from attrfit.data.demo_scene import HEAD_COLUMNS
from attrfit.data.split import load_split


def flipped_cells(n: int, seed: int, noise: float) -> dict[str, set[str]]:
    """Per head, the image paths (as in the demo CSV) whose label the demo flipped."""
    true = sample_labels(n, seed, noise)
    observed = add_label_noise(true, noise, seed)
    return {h: {f"resized/{i + 1}.jpg" for i in range(n) if true[i, k] != observed[i, k]}
            for k, h in enumerate(HEAD_COLUMNS)}


def audited_paths(data_dir: Path) -> set[str]:
    """The image paths of the train and val sides of the demo's split (what audit-labels audits)."""
    sides = load_split(data_dir / "annotations.split.json").sides  # side -> image paths
    return set(sides["train"]) | set(sides["val"])


def score(found: dict[str, set[str]], flips: dict[str, set[str]], audited: set[str]) -> dict[str, dict]:
    out = {}
    for h in HEAD_COLUMNS:
        truth = flips[h] & audited
        hit = found.get(h, set()) & truth
        n_found = len(found.get(h, set()))
        out[h] = {"flipped": len(truth), "found": n_found, "true_found": len(hit),
                  "precision": len(hit) / n_found if n_found else float("nan"),
                  "recall": len(hit) / len(truth) if truth else float("nan")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("suspects", type=Path)
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    found: dict[str, set[str]] = {}
    for r in csv.DictReader(open(args.suspects, newline="", encoding="utf-8")):
        found.setdefault(r["head"], set()).add(r["image_path"])
    result = score(found, flipped_cells(args.n, args.seed, args.noise), audited_paths(args.data_dir))
    print(f"{'head':<14} {'flipped':>7} {'found':>6} {'correct':>7} {'precision':>9} {'recall':>6}")
    for h, m in result.items():
        note = "  (no suspects: not judged, or none found)" if not m["found"] else ""
        print(f"{h:<14} {m['flipped']:7d} {m['found']:6d} {m['true_found']:7d} {m['precision']:9.3f} "
              f"{m['recall']:6.3f}{note}")
    found_all = sum(m["found"] for m in result.values())
    hit_all = sum(m["true_found"] for m in result.values())
    flipped_all = sum(m["flipped"] for m in result.values())
    print(f"{'ALL':<14} {flipped_all:7d} {found_all:6d} {hit_all:7d} "
          f"{hit_all / found_all if found_all else float('nan'):9.3f} {hit_all / flipped_all:6.3f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
