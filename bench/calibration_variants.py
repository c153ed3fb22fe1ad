"""Which temperatures calibrate the test side: one per head (what a run fits), one per head size, or none?

    python bench/calibration_variants.py RUN [RUN ...]

For each run (its best checkpoint, its own split), the temperatures are fitted on the val side's
probabilities in three ways and the test side's expected calibration error is measured under each
(per head, then the mean over heads, the largest, and pooled over heads as the report's
reliability diagram draws it):

- ``none``: temperature 1, the model's own probabilities;
- ``per head``: each head's own temperature by val log-likelihood, what ``decisions.json`` holds;
- ``per head size``: one temperature for all heads with the same number of classes, by the val
  log-likelihood of those heads together (fewer parameters, each fitted on more images).
"""

from __future__ import annotations

import sys

import numpy as np

import common


def parse_args():
    p = common.base_parser(__doc__, "calibration_variants")
    p.add_argument("runs", nargs="+", help="run folders")
    return p.parse_args()


def temperatures(val: list[np.ndarray], labels: np.ndarray) -> dict[str, list[float]]:
    """Each variant's temperature per head, fitted on the val side."""
    from attrfit.evaluation.calibration import fit_temperature, log_probs

    ks = [p.shape[1] for p in val]
    by_size = {}
    for k in set(ks):
        heads = [j for j, kj in enumerate(ks) if kj == k]
        by_size[k] = fit_temperature(np.concatenate([log_probs(val[j]) for j in heads]),
                                     np.concatenate([labels[:, j] for j in heads]))
    return {"none": [1.0] * len(val),
            "per head": [fit_temperature(log_probs(p), labels[:, j]) for j, p in enumerate(val)],
            "per head size": [by_size[k] for k in ks]}


def measured(test: list[np.ndarray], labels: np.ndarray, temps: list[float], heads: tuple[str, ...]) -> dict:
    from attrfit.evaluation.calibration import ece, reliability, scaled

    probs = [scaled(p, t) for p, t in zip(test, temps)]
    per_head = [ece(p, labels[:, j]) for j, p in enumerate(probs)]
    worst = int(np.argmax(per_head))
    return {"mean": float(np.mean(per_head)), "largest": per_head[worst], "largest_head": heads[worst],
            "pooled": reliability(probs, labels).ece, "above_0.03": int(sum(e > 0.03 for e in per_head))}


def main() -> int:
    args = parse_args()
    rows, lines = [], []
    for run in args.runs:
        val, val_labels, schema = common.run_probs(run, "val")
        test, test_labels, _ = common.run_probs(run, "test")
        for variant, temps in temperatures(val, val_labels).items():
            m = measured(test, test_labels, temps, schema.heads)
            lines.append({"run": run, "variant": variant, "temperatures": temps, **m})
            rows.append(f"| {run} | {variant} | {m['mean']:.4f} | {m['largest']:.3f} ({m['largest_head']}) | "
                        f"{m['above_0.03']} of {len(schema.heads)} | {m['pooled']:.4f} |")
    head = ("| run | temperatures | test ECE, mean over heads | largest | heads above 0.03 | pooled |\n"
            "|---|---|---|---|---|---|")
    common.report("calibration_variants", args.out, [head + "\n" + "\n".join(rows)],
                  {"machine": common.machine(common.torch.device("cpu")), "runs": lines})
    return 0


if __name__ == "__main__":
    sys.exit(common.run_main(main))
