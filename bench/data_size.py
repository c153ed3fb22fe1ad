"""Is a PETA model limited by its training time or by its training people? Train on a share of the people.

    python bench/data_size.py --split S.split.json --fraction 0.5 --epochs 15
    python bench/data_size.py --csv heads --split S.split.json --fraction 0.25 --epochs 15 --base "--seed 1"

From a split of PETA (``--split``, grouped by ``person_id``), keep the val and test sides as
they are and a random ``--fraction`` of the train side's people (seed 0); write that table and
its split under ``--workdir``, then train from scratch through the CLI with the same number of
optimizer steps as ``--epochs`` on the whole train side (so ``--epochs / --fraction`` epochs),
the default recipe plus ``--base``. The test score is printed beside the run's; compare it with
the same recipe on the whole train side (``bench/ablation.py``'s ``base`` on the same split).
"""

from __future__ import annotations

import csv
import json
import random
import shlex
import subprocess
import sys
from pathlib import Path

import common


def parse_args():
    p = common.base_parser(__doc__, "data_size")
    p.add_argument("--csv", choices=sorted(common.PETA_CSVS), default="35")
    p.add_argument("--split", type=Path, required=True, help="the split whose train people are subsampled")
    p.add_argument("--fraction", type=float, required=True, help="share of the train side's people kept")
    p.add_argument("--epochs", type=int, default=15, help="epochs on the whole train side (default 15)")
    p.add_argument("--base", default="", help="flags the run gets on top of the defaults")
    p.add_argument("--workdir", type=Path, default=common.RESULTS / "data_size")
    return p.parse_args()


def subset(csv_path: Path, split_path: Path, fraction: float, out: Path) -> tuple[Path, Path, dict]:
    """The table of the kept train people plus the whole val and test sides, and its split file."""
    from attrfit.data.split import (Split, assignment_digest, fingerprint, load_split, row_digest, save_split,
                                    SIDES)
    from attrfit.data.table import read_table

    split = load_split(split_path)
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    by_path = {r["image_path"]: r for r in rows}
    people = sorted({by_path[p]["person_id"] for p in split.sides["train"]})
    kept = set(random.Random(0).sample(people, round(fraction * len(people))))
    sides = {"train": sorted(p for p in split.sides["train"] if by_path[p]["person_id"] in kept),
             "val": split.sides["val"], "test": split.sides["test"]}
    table_path = out / f"{csv_path.stem}-{fraction:g}.csv"
    with open(table_path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(by_path[p] for s in SIDES for p in sides[s])
    table = read_table(table_path, images=csv_path.parent, group_column="person_id", schema=split.schema)
    digest = {table.paths[i]: row_digest(table, i) for i in range(len(table))}
    new = Split(seed=split.seed, fingerprint=fingerprint(table), sides=sides, counts={s: len(sides[s]) for s in SIDES},
                test_fraction=split.test_fraction, val_fraction=split.val_fraction, group_column="person_id",
                stratify=split.stratify, n_rows=len(table), schema=split.schema, assignment=assignment_digest(sides),
                row_digests={s: [digest[p] for p in sides[s]] for s in SIDES})
    split_out = save_split(new, out / f"{csv_path.stem}-{fraction:g}.split.json", force=True)
    return table_path, split_out, {"people": len(kept), "of_people": len(people), "train_images": len(sides["train"])}


def main() -> int:
    args = parse_args()
    if not common.require_peta():
        return 0
    csv_path = common.peta_csv(args.csv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    table, split, kept = subset(csv_path, args.split, args.fraction, args.workdir)
    run = args.workdir / f"{args.csv}-{args.fraction:g}"
    epochs = round(args.epochs / args.fraction)
    cmd = [sys.executable, "-m", "attrfit", "train", str(table), "--images", str(csv_path.parent), "--split", str(split),
           "--group-column", "person_id", "--size", common.PETA_SIZE, "--cache-dir", str(args.workdir / "cache"),
           "--epochs", str(epochs), "--run-dir", str(run), "--no-report", "--quiet", *shlex.split(args.base)]
    if not (run / "results.json").is_file():  # a finished run is reused; an unfinished one is started again
        subprocess.run(["rm", "-rf", str(run)], check=True)
        subprocess.run(cmd, check=True)
    results = json.loads((run / "results.json").read_text())
    rule = results["rules"][json.loads((run / "decisions.json").read_text())["rule"]]
    line = {"fraction": args.fraction, **kept, "epochs": epochs, "rule_mean": rule["mean"],
            "most_probable_mean": results["mean"], "command": shlex.join(["attrfit", *cmd[3:]])}
    table_md = ("| train people | train images | epochs | mean balanced accuracy (the run's rule) | mean accuracy "
                "(most probable) |\n|---|---|---|---|---|\n"
                f"| {kept['people']} of {kept['of_people']} | {kept['train_images']} | {epochs} | "
                f"{rule['mean']['balanced_accuracy']:.3f} | {results['mean']['accuracy']:.3f} |")
    common.report("data_size", args.out, [table_md], {"machine": common.machine(common.torch.device("cpu")),
                                                      "csv": args.csv, "result": line})
    return 0


if __name__ == "__main__":
    sys.exit(common.run_main(main))
