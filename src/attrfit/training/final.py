"""The end of a run: its decision rules fitted on the val side, then its best checkpoint scored once on the test
side, into decisions.json, results.json and the report."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch

from attrfit.core.errors import AttrfitError
from attrfit.core.memory import is_out_of_memory
from attrfit.evaluation.decision_fit import fit_decisions
from attrfit.evaluation.decisions import MOST_PROBABLE, CheckpointRef, Decisions
from attrfit.evaluation.metrics import majority_classes
from attrfit.evaluation.results import Results
from attrfit.evaluation.scoring import evaluate_images, judge, predict_probs
from attrfit.model.checkpoint import Checkpoint, Progress, model_from_checkpoint
from attrfit.model.precision import guard_bf16, inference_batches, set_fp32_layers
from attrfit.training.trainer import Trainer

log = logging.getLogger(__name__)


def score_test_side(run: Path, t: Trainer, data, prog: Progress) -> Results:
    """Fit the decision rules of the best checkpoint on the val side (decisions.json), then score it once on the
    test side under the run's rule; write results.json (and the report)."""
    from attrfit.core import runs
    from attrfit.evaluation.scoring import Scored

    best = Checkpoint.load(run / "best.pt")
    model = model_from_checkpoint(best).to(t.device)
    if t.cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    test = data.sides["test"]
    extra = guard_bf16(model, t.precision, t.device, tuple(data.images.shape[2:]), None,
                       inference_batches(len(test), t.cfg.eval_batch_size))  # the test side's batch sizes
    set_fp32_layers(model, sorted({*extra.fp32_layers, *(t.check.fp32_layers if t.check else [])}))
    val = predict_probs(model, data.images[data.sides["val"]], t.device, t.precision, t.cfg.eval_batch_size,
                        tta=t.cfg.tta)
    decisions = fit_run_decisions(run, val, data, best, t.cfg)  # on the val side, before the test side is scored
    train_labels = data.labels[data.sides["train"]]  # the majority baseline's
    _, raw = evaluate_images(model, data.images[test], data.labels[test], train_labels, data.schema, t.device,
                             t.precision, t.cfg.eval_batch_size, tta=t.cfg.tta)
    majority = majority_classes(train_labels.numpy())
    judged = judge(raw, data.labels[test].numpy(), majority, data.schema, decisions, decisions.rule)
    results, probs = judged.results, judged.probs
    # results.json's heads and means stay the most probable class's, as they always were; every rule is in "rules"
    out = dataclasses.replace(results.under(MOST_PROBABLE), side="test", checkpoint="best.pt",
                              best_epoch=prog.best_epoch, monitor=t.cfg.monitor, wall_time_s=prog.wall_time,
                              images_per_s=_mean_rate(run))
    runs.write_json(run / "results.json", out.to_json())
    if t.cfg.report:
        from attrfit.evaluation.report import write_report

        try:
            scored = Scored(dataclasses.replace(results, side="test", checkpoint=str(run / "best.pt"),
                                                epoch=best.progress.epoch), probs, data.labels[test].numpy(),
                            [data.image_paths[int(r)] for r in test], data.schema, best, data.images[test],
                            judged.raw_probs, judged.pred, decisions, decisions.rule)
            write_report(run, scored=scored)  # the test side is scored once, here
        except (AttrfitError, OSError) as e:  # the run itself is complete: never lose it to the report
            log.warning("the report could not be written (%s); make it later with 'attrfit report %s'", e, run)
        except (MemoryError, RuntimeError) as e:  # not --batch-size's fault: say where it came from
            if not isinstance(e, MemoryError) and not is_out_of_memory(e):
                raise
            log.warning("the report ran out of memory while drawing its figures; the run itself is complete and "
                        "kept in %s. Make the report later with 'attrfit report %s'", run, run)
    return out


def fit_run_decisions(run: Path, val_probs: list[np.ndarray], data, best: Checkpoint, cfg) -> Decisions:
    """Temperatures, priors, strength and thresholds of best.pt, fitted on its val side probabilities
    ``val_probs``; saved as decisions.json."""
    val, train = data.sides["val"], data.sides["train"]
    ref = CheckpointRef("best.pt", best.progress.epoch, best.progress.step)
    decisions = fit_decisions(val_probs, data.labels[val].numpy(), data.labels[train].numpy(), data.schema,
                              cfg.objective, ref, cfg.tta)
    decisions.write(run)
    return decisions


def _mean_rate(run: Path) -> float | None:
    from attrfit.core import runs

    rates = [float(r["images_per_s"]) for r in runs.MetricsLog(run / "metrics.csv").rows()]
    return float(np.median(rates)) if rates else None
