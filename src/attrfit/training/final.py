"""The end of a run: its best checkpoint scored once on the test side, into results.json and the report."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch

from attrfit.core.errors import AttrfitError
from attrfit.core.memory import is_out_of_memory
from attrfit.evaluation.results import Results
from attrfit.evaluation.scoring import evaluate_images
from attrfit.model.checkpoint import Checkpoint, Progress, model_from_checkpoint
from attrfit.model.precision import guard_bf16, inference_batches, set_fp32_layers
from attrfit.training.trainer import Trainer

log = logging.getLogger(__name__)


def score_test_side(run: Path, t: Trainer, data, prog: Progress) -> Results:
    """Score the best checkpoint once on the test side; write results.json (and the report)."""
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
    results, probs = evaluate_images(model, data.images[test], data.labels[test], data.labels[data.sides["train"]],
                                     data.schema, t.device, t.precision, t.cfg.eval_batch_size, tta=t.cfg.tta)
    out = dataclasses.replace(results, side="test", checkpoint="best.pt", best_epoch=prog.best_epoch,
                              monitor=t.cfg.monitor, wall_time_s=prog.wall_time, images_per_s=_mean_rate(run))
    runs.write_json(run / "results.json", out.to_json())
    if t.cfg.report:
        from attrfit.evaluation.report import write_report

        try:
            scored = Scored(dataclasses.replace(results, side="test", checkpoint=str(run / "best.pt"),
                                                epoch=best.progress.epoch), probs, data.labels[test].numpy(),
                            [data.image_paths[int(r)] for r in test], data.schema, best, data.images[test])
            write_report(run, scored=scored)  # the test side is scored once, here
        except (AttrfitError, OSError) as e:  # the run itself is complete: never lose it to the report
            log.warning("the report could not be written (%s); make it later with 'attrfit report %s'", e, run)
        except (MemoryError, RuntimeError) as e:  # not --batch-size's fault: say where it came from
            if not isinstance(e, MemoryError) and not is_out_of_memory(e):
                raise
            log.warning("the report ran out of memory while drawing its figures; the run itself is complete and "
                        "kept in %s. Make the report later with 'attrfit report %s'", run, run)
    return out


def _mean_rate(run: Path) -> float | None:
    from attrfit.core import runs

    rates = [float(r["images_per_s"]) for r in runs.MetricsLog(run / "metrics.csv").rows()]
    return float(np.median(rates)) if rates else None
