"""The run report: one self-contained HTML file that says how good the model really is.

``attrfit report RUN`` (and ``attrfit train`` at its end) scores the run's best checkpoint on
one side of its split and writes ``RUN/report.html``: every figure is embedded as a
``data:`` URI, so the file alone opens offline in any browser; the same figures are also
written as PNGs to ``RUN/report_files/`` beside it. The val-side report goes to
``report_val.html`` (and ``report_val_files/``) so it never replaces the test one.

The report reads ``config.json``, ``environment.json``, ``results.json``, ``split_ref.json``
(and the split file), ``metrics.csv`` and ``lr_find/lr_find.png`` when present. It holds:
warnings (:mod:`attrfit.evaluation.findings`, with their thresholds), a per-head table
(accuracy, balanced accuracy, macro-F1, majority-class accuracy, the gain over it, 95%
bootstrap intervals, n), training curves, the LR and momentum schedule, the LR range test,
a row-normalised confusion matrix per head (:mod:`attrfit.evaluation.figures`), the most
confident mistakes, every decision rule's numbers and the calibration with its reliability diagram
(:mod:`attrfit.evaluation.report_decisions`), and a summary of the data, the split, the config and the
hardware (:mod:`attrfit.evaluation.report_page`). Its tables use one decision rule (``--decide``; by
default the run's own) and say which.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from attrfit.core import files, outputs
from attrfit.core.errors import AttrfitError
from attrfit.evaluation.bootstrap import N_BOOT
from attrfit.evaluation.figures import (MATRIX_CLASSES, MAX_MATRICES, MAX_PANELS, accuracy_figure, confusion_figure,
                                        loss_figure, png_bytes, schedule_figure)
from attrfit.evaluation.findings import HeadRow, head_table_rows, warnings_for
from attrfit.evaluation.pages import generator
from attrfit.evaluation.report_decisions import RELIABILITY_PNG, reliability_png
from attrfit.evaluation.report_page import RunFacts, best_row, read_run, render_html, train_val_accuracy
from attrfit.evaluation.results import Results

log = logging.getLogger(__name__)


@dataclass
class Report:
    """A rendered report: the HTML (figures embedded), the figures as PNG bytes, the warnings."""

    html: str
    figures: dict[str, bytes] = field(default_factory=dict)  # file name -> PNG
    warnings: list[str] = field(default_factory=list)


def default_out(run: Path, side: str) -> Path:
    return Path(run) / ("report.html" if side == "test" else f"report_{side}.html")


def files_dir(out: Path) -> Path:
    """Where the PNGs go beside ``out``: report.html -> report_files/."""
    return out.with_name(out.stem + "_files")


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "head"


def make_figures(facts: RunFacts, scored, rows: list[HeadRow], side: str) -> dict[str, tuple[str, bytes]]:
    """File name -> (caption, PNG) for every figure of the report, in reading order."""
    from attrfit.recipe.config import from_dict
    from attrfit.evaluation.metrics import confusion_matrix

    schema, ckpt = scored.schema, scored.checkpoint
    best = ckpt.progress.best_epoch
    figs: dict[str, tuple[str, bytes]] = {}
    if facts.metrics:
        figs["loss.png"] = ("Training loss per epoch.", png_bytes(loss_figure(facts.metrics, schema.heads)))
        figs["accuracy.png"] = (
            "Val accuracy and balanced accuracy per epoch beside the majority-class baseline; train accuracy "
            "is measured on augmented batches during the epoch. The red line marks the best epoch."
            + (f" The first {MAX_PANELS} of {len(schema.heads)} heads are drawn; the table has them all."
               if len(schema.heads) > MAX_PANELS else ""),
            png_bytes(accuracy_figure(facts.metrics, schema.heads, schema.num_classes, best)))
        per_epoch = float(facts.metrics[0]["step"]) / float(facts.metrics[0]["epoch"])
        cfg = from_dict(facts.config)
        total = max(1, round(cfg.epochs * per_epoch))
        figs["schedule.png"] = ("Learning rate and momentum of every step, recomputed from the config.",
                                png_bytes(schedule_figure(cfg, total, per_epoch, float(ckpt.max_lr), facts.metrics)))
    lr_png = facts.run / "lr_find" / "lr_find.png"
    if lr_png.is_file():
        figs["lr_find.png"] = ("LR range test (run before training to pick the max LR).", lr_png.read_bytes())
    for j, h in enumerate(schema.heads[:MAX_MATRICES]):
        if not rows[j].n:
            continue  # nothing to draw; the table says n/a
        classes = schema.classes[h]
        cm = confusion_matrix(scored.predicted(j), scored.labels[:, j], len(classes))
        pooled = (f" The {MATRIX_CLASSES} most frequent of its {len(classes)} classes are drawn; the rest are pooled "
                  "as 'other'." if len(classes) > MATRIX_CLASSES else "")
        figs[f"confusion_{j:02d}_{safe_name(h)}.png"] = (
            f"{h}: accuracy {rows[j].accuracy:.3f}, balanced accuracy {rows[j].balanced_accuracy:.3f}, "
            f"n={rows[j].n}.{pooled}",
            png_bytes(confusion_figure(cm, classes, h, side)))
    figs[RELIABILITY_PNG] = reliability_png(scored)
    return figs


def make_report(run: str | Path, side: str = "test", progress: bool = False, n_boot: int = N_BOOT,
                scored=None, decide: str | None = None) -> Report:
    """Score the run's best checkpoint on ``side`` under the decision rule ``decide`` (None: the run's own) and
    render the report (nothing is written).

    ``scored`` (an :class:`attrfit.evaluation.scoring.Scored` of best.pt on ``side``) skips the scoring:
    ``attrfit train`` passes the one it has just computed.

    >>> report = make_report("runs/demo")  # doctest: +SKIP
    >>> report.warnings  # doctest: +SKIP
    ["age: predicts '25-35' for 97% of test images; the head has collapsed ..."]
    """
    from attrfit.evaluation.scoring import score_checkpoint
    from attrfit.evaluation.metrics import majority_classes

    run = Path(run)
    if side not in ("test", "val"):
        raise AttrfitError(f"report --side must be test or val, not {side!r}")
    if not (run / "best.pt").is_file():
        raise AttrfitError(f"{run}: not a run folder with a best.pt; give the folder 'attrfit train' wrote")
    if scored is None:
        scored = score_checkpoint(str(run), side=side, progress=progress, decide=decide)
    facts = read_run(run, scored)
    majority = majority_classes(facts.table.labels[facts.sides["train"]])
    rows = head_table_rows(scored, majority, n_boot)
    warnings = collect_warnings(facts, scored, rows, side)
    figs = make_figures(facts, scored, rows, side)
    page = render_html(facts, scored, rows, warnings, figs, side)
    return Report(page, {name: data for name, (_, data) in figs.items()}, warnings)


def collect_warnings(facts: RunFacts, scored, rows: list[HeadRow], side: str) -> list[str]:
    best = scored.checkpoint.progress.best_epoch
    val = Results.from_json(scored.checkpoint.val).heads if scored.checkpoint.val else None  # most probable class
    test = most_probable(scored.results if side == "test" else facts.results)
    train_acc, val_acc = train_val_accuracy(best_row(facts.metrics, best), scored.schema.heads)
    return warnings_for(rows, side, val, test, train_acc, val_acc, best, facts.split.exact_duplicates_across_sides)


def most_probable(results: Results | None) -> dict | None:
    """Per-head results of the most probable class, what validation picked the best epoch by (None: none)."""
    from attrfit.evaluation.decisions import MOST_PROBABLE

    if results is None:
        return None
    return results.under(MOST_PROBABLE).heads if results.rules else results.heads


# ---------------------------------------------------------------- writing it

def is_report(path: Path) -> bool:
    """Whether ``path`` is a page attrfit's report wrote (so its figures folder is the report's to replace)."""
    try:
        with open(path, "rb") as f:
            return generator("report").encode() in f.read(2048)
    except OSError:
        return False


def check_figures_folder(out: Path) -> None:
    """Refuse a report whose figures folder (``<out stem>_files/``) holds files a report did not write."""
    out = Path(out)
    folder = files_dir(out)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise AttrfitError(f"{folder}, where the report's figures go, is a file; choose another --out")
    in_run = outputs.is_run_folder(folder.parent) and folder.name in outputs.RUN_FOLDERS
    if not (in_run or is_report(out)) and any(folder.iterdir()):
        raise AttrfitError(f"{folder}, where the report's figures go, holds files a report did not write; "
                           "choose another --out, or move them")


def save_report(report: Report, out: str | Path) -> Path:
    """Write the HTML and, in ``<out stem>_files/`` beside it, the PNG figures; return the HTML path."""
    out = Path(out)
    folder = files_dir(out)
    check_figures_folder(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.png"):  # figures of an earlier report (e.g. of a head since renamed)
            old.unlink()
        for name, data in report.figures.items():
            (folder / name).write_bytes(data)
        files.write_text(out, report.html, "the report", "pass --out to a writable place")
    except OSError as e:
        raise AttrfitError(f"cannot write the report {out}: {e.strerror or e}; "
                           "pass --out to a writable place") from None
    return out


def write_report(run: str | Path, side: str = "test", out: str | Path | None = None, progress: bool = False,
                 scored=None) -> Path:
    """Score, render and write the report of a run; return the HTML path (RUN/report.html by default).

    >>> write_report("runs/demo")  # doctest: +SKIP
    PosixPath('runs/demo/report.html')
    """
    report = make_report(run, side, progress, scored=scored)
    path = save_report(report, out or default_out(Path(run), side))
    if report.warnings:
        heads = dict.fromkeys(w.split(": ", 1)[0] for w in report.warnings)  # in order, once each
        log.warning("the report has %d warning(s) (%s); read them at the top of %s", len(report.warnings),
                    ", ".join(heads), path)
    else:
        log.info("wrote the report %s", path)
    return path
