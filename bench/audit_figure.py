"""A small PNG of the top suspects per head from an `attrfit audit-labels` CSV (docs/experiments/audit.md).

    python bench/audit_figure.py issues.csv --images DIR --per-head 6 --out bench/figures/peta_audit_suspects.png

Each row of the figure is one head; each panel one suspect (its rank, given -> suggested label,
and p(given)), most suspect first. Images are read from DIR (the labels CSV's folder).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from matplotlib.figure import Figure
from PIL import Image


def top_per_head(rows: list[dict], per_head: int, heads: list[str] | None) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:  # the CSV is ranked within each head
        if heads and r["head"] not in heads:
            continue
        out.setdefault(r["head"], [])
        if len(out[r["head"]]) < per_head:
            out[r["head"]].append(r)
    return out


def figure(top: dict[str, list[dict]], images: Path, per_head: int) -> Figure:
    fig = Figure(figsize=(1.35 * per_head, 2.25 * len(top)), layout="constrained")
    axes = fig.subplots(len(top), per_head, squeeze=False)
    for row_axes, (head, suspects) in zip(axes, top.items()):
        for ax in row_axes:
            ax.axis("off")
        for ax, s in zip(row_axes, suspects):
            with Image.open(images / s["image_path"]) as im:
                ax.imshow(im.convert("RGB"))
            ax.set_title(f"#{s['rank']} {s['given_label']}\n-> {s['suggested_label']} ({float(s['score']):.2f})",
                         fontsize=7)
        row_axes[0].text(-0.15, 0.5, head, transform=row_axes[0].transAxes, rotation=90, ha="right", va="center",
                         fontsize=9, fontweight="bold")
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("suspects", type=Path)
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--per-head", type=int, default=6)
    ap.add_argument("--heads", help="comma-separated heads (default: all)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--dpi", type=int, default=80)
    args = ap.parse_args()
    rows = list(csv.DictReader(open(args.suspects, newline="", encoding="utf-8")))
    top = top_per_head(rows, args.per_head, args.heads.split(",") if args.heads else None)
    figure(top, args.images, args.per_head).savefig(args.out, dpi=args.dpi)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
