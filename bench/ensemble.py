"""Several short runs averaged against one long one: is the time better spent on one model or on a few?

    python bench/ensemble.py RUN_LONG RUN_A,RUN_B,RUN_C           # the average of A, B, C against RUN_LONG
    python bench/ensemble.py RUN_LONG RUN_A RUN_A,RUN_B RUN_A,RUN_B,RUN_C

Every run must have been trained on the same split (the same val and test images). A group
``A,B,...`` is scored as one model whose probabilities are the mean of its runs' (each run's
best checkpoint, its own probabilities at temperature 1); its decision rules are fitted on the
averaged val probabilities exactly as a run fits its own (``fit_decisions``), and the test side
is scored under the run's rule (``prior-corrected`` for the balanced objective) and under
``most-probable``. Each group's mean balanced accuracy and accuracy are paired against the first
argument's on the same test images (95% bootstrap interval, the policy of ``attrfit compare``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import common


def parse_args():
    p = common.base_parser(__doc__, "ensemble")
    p.add_argument("reference", type=Path, help="the run every group is paired against")
    p.add_argument("groups", nargs="+", help="comma-separated run folders, averaged into one model")
    return p.parse_args()


def train_labels(run: Path) -> np.ndarray:
    from attrfit.data.load import load_data, saved_run_config
    from attrfit.model.checkpoint import Checkpoint
    from attrfit.recipe.config import from_dict

    ckpt = Checkpoint.load(run / "best.pt")
    data = load_data(saved_run_config(from_dict(ckpt.config).data, run), schema=ckpt.schema, progress=False,
                     create_split=False)
    return data.labels[data.sides["train"]].numpy()


def scored(runs: list[Path], probs: dict, train: np.ndarray) -> dict[str, list[np.ndarray]]:
    """Per rule, each head's predicted class on the test side, for the runs' averaged probabilities."""
    from attrfit.evaluation.decision_fit import fit_decisions
    from attrfit.evaluation.decisions import CheckpointRef, MOST_PROBABLE
    from attrfit.evaluation.scoring import judge
    from attrfit.evaluation.metrics import majority_classes

    val = [probs[r, "val"] for r in runs]
    test = [probs[r, "test"] for r in runs]
    heads = range(len(val[0][0]))
    mean_val = [np.mean([v[0][j] for v in val], 0) for j in heads]
    mean_test = [np.mean([t[0][j] for t in test], 0) for j in heads]
    schema = val[0][2]
    decisions = fit_decisions(mean_val, val[0][1], train, schema, "balanced", CheckpointRef("best.pt", 0, 0), False)
    return {rule: judge(mean_test, test[0][1], majority_classes(train), schema, decisions, rule).pred
            for rule in (decisions.rule, MOST_PROBABLE)}


def boot_means(pred: list[np.ndarray], labels: np.ndarray, ks: list[int], idx: np.ndarray) -> dict[str, np.ndarray]:
    """Mean over heads of accuracy and balanced accuracy on each resample (row 0 of the result: all images)."""
    from attrfit.evaluation.bootstrap import head_scores

    idx = np.vstack([np.arange(len(labels))[None], idx])
    per_head = [head_scores(labels[:, j], pred[j] == labels[:, j], k, idx) for j, k in enumerate(ks)]
    return {m: np.mean([s[m] for s in per_head], 0) for m in ("balanced_accuracy", "accuracy")}


def main() -> int:
    from attrfit.evaluation.bootstrap import N_BOOT, resample_indices

    args = parse_args()
    groups = [[Path(r) for r in g.split(",")] for g in args.groups]
    runs = sorted({args.reference, *(r for g in groups for r in g)})
    probs = {(r, side): common.run_probs(r, side) for r in runs for side in ("val", "test")}
    train = train_labels(args.reference)
    labels, schema = probs[args.reference, "test"][1], probs[args.reference, "test"][2]
    ks = list(schema.num_classes)
    idx = resample_indices(len(labels), N_BOOT)
    ref = {rule: boot_means(p, labels, ks, idx) for rule, p in scored([args.reference], probs, train).items()}
    lines, rows = [], []
    for g in [[args.reference], *groups]:
        name = " + ".join(r.name for r in g)
        for rule, pred in scored(g, probs, train).items():
            b = boot_means(pred, labels, ks, idx)
            line = {"group": name, "runs": [str(r) for r in g], "rule": rule}
            for m in ("balanced_accuracy", "accuracy"):
                d = b[m][1:] - ref[rule][m][1:]
                line[m] = float(b[m][0])
                line[f"{m}_diff"] = float(b[m][0] - ref[rule][m][0])
                line[f"{m}_ci"] = [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))]
            lines.append(line)
            rows.append(f"| {name} | {rule} | {line['balanced_accuracy']:.3f} | "
                        f"{line['balanced_accuracy_diff']:+.3f} ({line['balanced_accuracy_ci'][0]:+.3f}.."
                        f"{line['balanced_accuracy_ci'][1]:+.3f}) | {line['accuracy']:.3f} | {line['accuracy_diff']:+.3f} "
                        f"({line['accuracy_ci'][0]:+.3f}..{line['accuracy_ci'][1]:+.3f}) |")
    head = (f"| runs averaged | rule | mean balanced accuracy | minus {args.reference.name} (95%) | mean accuracy | "
            f"minus {args.reference.name} (95%) |\n|---|---|---|---|---|---|")
    common.report("ensemble", args.out, [head + "\n" + "\n".join(rows)],
                  {"machine": common.machine(common.torch.device("cpu")), "reference": str(args.reference),
                   "groups": lines})
    return 0


if __name__ == "__main__":
    sys.exit(common.run_main(main))
