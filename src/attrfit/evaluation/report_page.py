"""The report's page: what the run folder holds, and the sections of the HTML built from it.

Every user string is escaped and every image is a ``data:`` URI (:mod:`attrfit.evaluation.pages`),
so the page alone opens offline in any browser.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attrfit.core.formatting import number, percent, signed
from attrfit.data.split import Split
from attrfit.evaluation import mistakes
from attrfit.evaluation.bootstrap import N_BOOT
from attrfit.evaluation.figures import MAX_MATRICES, WIDE_MATRIX
from attrfit.evaluation.findings import HeadRow
from attrfit.evaluation.metrics import is_collapsed
from attrfit.evaluation.pages import Html, escape, flagged, html_table, kv_table, page, png_figure, with_ci
from attrfit.evaluation.results import InstanceMetrics, MeanMetrics, Results
from attrfit.model.checkpoint import Checkpoint


LISTED_CLASSES = 20  # classes listed per head in the data table
NO_LABELS = "n/a"  # a head with no labelled rows on the reported side


# ---------------------------------------------------------------- what the run folder holds


@dataclass
class RunFacts:
    """Everything the report reads from a run folder besides the scored predictions."""

    run: Path
    config: dict
    environment: dict
    results: Results | None  # results.json (test side, best checkpoint); None if training never finished
    split_ref: dict
    split: Split
    split_path: Path
    metrics: list[dict]  # metrics.csv rows (strings)
    table: object  # attrfit.data.table.Table
    sides: dict[str, np.ndarray]  # table row indices per side


def read_run(run: Path, scored) -> RunFacts:
    """Read the run folder's files, and the table and split the best checkpoint was trained on."""
    from attrfit.core import runs
    from attrfit.recipe.config import from_dict
    from attrfit.data.load import read_checked, saved_run_config

    def optional_json(name: str) -> dict:
        return runs.read_json(run / name) if (run / name).is_file() else {}

    cfg = from_dict(scored.checkpoint.config)
    table, split, split_path, sides = read_checked(saved_run_config(cfg.data, run), scored.schema, create_split=False)
    return RunFacts(run, scored.checkpoint.config, optional_json("environment.json"),
                    Results.read(run / "results.json"), optional_json("split_ref.json"),
                    split, Path(split_path), runs.MetricsLog(run / "metrics.csv").rows(), table, sides)


def best_row(metrics: list[dict], epoch: int | None) -> dict | None:
    for r in metrics:
        if epoch is not None and int(float(r["epoch"])) == epoch:
            return r
    return metrics[-1] if metrics else None


def train_val_accuracy(row: dict | None, heads: tuple[str, ...]) -> tuple[dict, dict]:
    """(train accuracy, val accuracy) per head from one metrics.csv row."""
    if row is None:
        return {}, {}
    train = {h: float(row.get(f"train_accuracy_{h}") or "nan") for h in heads}
    val = {h: float(row.get(f"val_accuracy_{h}") or "nan") for h in heads}
    return train, val


# ---------------------------------------------------------------- the sections


def metrics_table(rows: list[HeadRow], mean: MeanMetrics) -> Html:
    header = ["head", "accuracy (95% CI)", "balanced acc. (95% CI)", "chance 1/K", "macro-F1",
              "majority class", "majority acc.", "gain over majority (95% CI)", "most predicted", "n"]
    body = [_metrics_row(r) for r in rows]
    body.append([Html("<b>mean</b>"), _or_na(mean.accuracy), _or_na(mean.balanced_accuracy), "",
                 _or_na(mean.macro_f1), "", _or_na(mean.majority_accuracy), _or_na(mean.gain, signed), "", ""])
    table = html_table(header, body, "metrics")
    empty = [r.head for r in rows if not r.n]
    if empty:
        table = Html(table + f'<p class="note">{NO_LABELS}: {escape(", ".join(empty))} had no labelled rows on this '
                     "side, so no score; the means are over the other heads.</p>")
    return table


def _or_na(x, fmt=number) -> str:
    """A mean, or 'n/a' when no head had labelled rows."""
    return NO_LABELS if x is None or (isinstance(x, float) and not math.isfinite(x)) else fmt(x)


def _metrics_row(r: HeadRow) -> list:
    if not r.n:  # nothing to score: the same 'n/a' as the printed table and evaluate
        return [r.head, NO_LABELS, NO_LABELS, number(r.chance), NO_LABELS, r.majority_class, NO_LABELS, NO_LABELS,
                NO_LABELS, 0]
    return [r.head, with_ci(r.accuracy, r.accuracy_ci),
            with_ci(r.balanced_accuracy, r.balanced_accuracy_ci,
                    flag=r.balanced_accuracy_ci[0] <= r.chance <= r.balanced_accuracy_ci[1]),
            number(r.chance), number(r.macro_f1), r.majority_class, number(r.majority_accuracy),
            with_ci(r.gain, r.gain_ci, sign=True, flag=r.gain_ci[0] <= 0),
            flagged(f"{r.top_class} ({percent(r.top_share)})", is_collapsed(r.top_share, r.n)), r.n]


def instance_html(m: InstanceMetrics | None) -> Html:
    """The binary-attribute metrics of the field (mA, instance-based), for tables of 0/1 heads."""
    if m is None:
        return Html("")
    pairs = [("mA (mean balanced accuracy over attributes)", number(m.mA)),
             ("instance-based accuracy", number(m.accuracy)), ("instance-based precision", number(m.precision)),
             ("instance-based recall", number(m.recall)), ("instance-based F1", number(m.f1))]
    note = ('<p class="note">Every head is a binary attribute, so the pedestrian-attribute field\'s metrics '
            'apply (Li et al. 2016; Jia et al. 2020; defined in docs/results.md). Instance-based metrics compare '
            'each image\'s set of predicted attributes with its true set; an image with an empty set scores 0, '
            'as in Jia et al.\'s code.</p>')
    return Html(f"<h3>Binary attributes ({m.n_attributes})</h3>" + kv_table(pairs) + note)


def data_table(facts: RunFacts, schema, majority_rows: list[HeadRow]) -> Html:
    labels = facts.table.labels
    body = []
    for j, h in enumerate(schema.heads):
        col = labels[:, j]
        counts = np.bincount(col[col >= 0], minlength=len(schema.classes[h]))
        listed = [f"{c} {n}" for c, n in zip(schema.classes[h], counts)]
        more = len(listed) - LISTED_CLASSES
        if more > 0:  # the most frequent ones, so the list stays readable for any K
            listed = [listed[i] for i in np.argsort(-counts, kind="stable")[:LISTED_CLASSES]] + [f"… and {more} more"]
        classes = ", ".join(listed)
        body.append([h, len(schema.classes[h]), classes, int((col < 0).sum()), majority_rows[j].majority_class])
    return html_table(["head", "K", "classes (rows)", "missing labels", "majority (train side)"], body, "data")


def split_pairs(facts: RunFacts) -> list[tuple[str, object]]:
    s = facts.split
    c = s.counts
    n = sum(c.values()) or 1
    sizes = ", ".join(f"{k} {c[k]} ({c[k] / n:.0%})" for k in ("train", "val", "test") if k in c)
    d = s.exact_duplicates_across_sides
    if d is None:
        dup = "not checked (run 'attrfit split' to make a split that checks byte-identical images)"
    else:
        dup = "none found" if not d else f"{len(d)} image(s) with a byte-identical copy on another side"
    return [("split file", str(facts.split_path)), ("sizes", sizes),
            ("grouping column", s.group_column or "none (rows split independently)"),
            ("stratified by", s.stratify or "–"), ("seed", s.seed),
            ("fingerprint", str(s.fingerprint)[:16]), ("exact duplicates across sides", dup)]


def training_pairs(facts: RunFacts, scored) -> list[tuple[str, object]]:
    env, res, ckpt = facts.environment, facts.results, scored.checkpoint
    prog = ckpt.progress
    wall = res.wall_time_s if res is not None and res.wall_time_s is not None else prog.wall_time
    rate = res.images_per_s if res is not None else None
    cpu = f"{env.get('cpu', '?')} ({env.get('cpu_count', '?')} cores, {env.get('torch_threads', '?')} torch threads)"
    hw = f"{env['cuda']}; host CPU {cpu}" if env.get("cuda") else cpu
    return [("epochs", f"{prog.epoch} of {facts.config.get('epochs')}; best epoch {prog.best_epoch} "
                       f"(picked by {facts.config.get('monitor')} on val)"),
            ("model", model_summary(ckpt)),
            ("max learning rate", number(ckpt.max_lr, "{:.4g}")),
            ("wall time (training)", f"{number(wall, '{:.1f}')} s" + (f" ({wall / 60:.1f} min)" if wall else "")),
            ("training images/s (median over epochs)", number(rate, "{:.0f}")),
            ("device", f"{env.get('device', '?')}, precision {env.get('precision', ckpt.precision)}, "
                       f"{env.get('world_size', 1)} process(es)"),
            ("hardware", hw), ("attrfit", env.get("attrfit", "?")), ("torch", env.get("torch", "?")),
            ("python", env.get("python", "?")), ("platform", env.get("platform", "?"))]


def model_summary(ckpt: Checkpoint) -> str:
    """The resolved model settings and its parameter count (BatchNorm statistics excluded)."""
    args = ckpt.model_args.cfg
    n = sum(v.numel() for k, v in ckpt.model.items() if "running_" not in k and "num_batches" not in k)
    settings = ", ".join(f"{k} {v}" for k, v in args.items() if v is not None)
    return f"{settings}; {n / 1e6:.2f} M parameters"


def warnings_html(warnings: list[str], heads: tuple[str, ...]) -> Html:
    if not warnings:
        return Html('<div class="ok">No warnings: no collapsed head, every head beats chance and the majority '
                    'class beyond its confidence interval, val agrees with test, no sign of overfitting.</div>')
    items = "".join(f"<li>{_bold_head(w, heads)}</li>" for w in warnings)
    return Html(f'<div class="warn"><h2>Warnings ({len(warnings)})</h2><ul>{items}</ul></div>')


def _bold_head(warning: str, heads: tuple[str, ...]) -> str:
    head, sep, rest = warning.partition(": ")
    return f"<b>{escape(head)}</b>: {escape(rest)}" if sep and (head in heads or head == "split") else escape(warning)


def config_html(config: dict) -> Html:
    """The resolved config as one small table per section (top-level settings under 'run')."""
    sections = {"run": {k: v for k, v in config.items() if not isinstance(v, dict)}}
    sections.update((k, v) for k, v in config.items() if isinstance(v, dict) and k != "data")
    sections["data"] = config.get("data", {})  # the widest, last
    tables = []
    for name, values in sections.items():
        pairs = [(k, v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)) for k, v in values.items()]
        tables.append(f"<div><h3>{escape(name)}</h3>{kv_table(pairs)}</div>")
    return Html('<div class="config">' + "".join(tables) + "</div>")


def matrices_note(rows: list[HeadRow]) -> str:
    """What the confusion-matrix section leaves out (heads without labels, heads past MAX_MATRICES)."""
    notes = []
    empty = [r.head for r in rows[:MAX_MATRICES] if not r.n]
    if empty:
        notes.append(f"No matrix for {', '.join(empty)}: no labelled rows on this side.")
    if len(rows) > MAX_MATRICES:
        notes.append(f"Matrices are drawn for the first {MAX_MATRICES} of {len(rows)} heads; the table above has "
                     "every head.")
    return " ".join(notes)


def render_html(facts: RunFacts, scored, rows: list[HeadRow], warnings: list[str],
                figs: dict[str, tuple[str, bytes]], side: str) -> str:
    """The whole page (every user string escaped, every image a data: URI)."""
    schema, prog = scored.schema, scored.checkpoint.progress
    from attrfit.evaluation import report_decisions as rd

    curves = [png_figure(n, c, d) for n, (c, d) in figs.items()
              if not n.startswith("confusion_") and n != rd.RELIABILITY_PNG]
    reliability = [png_figure(rd.RELIABILITY_PNG, *figs[rd.RELIABILITY_PNG])] if rd.RELIABILITY_PNG in figs else []
    matrices = [(n, c, d) for n, (c, d) in figs.items() if n.startswith("confusion_")]  # one per head, in order
    num_classes = {f"{j:02d}": k for j, k in enumerate(schema.num_classes)}  # matrix names: confusion_<j>_<head>
    confusions = [png_figure(n, c, d, "cm wide" if num_classes[n.split("_")[1]] > WIDE_MATRIX else "cm")
                  for n, c, d in matrices]
    note = matrices_note(rows)
    if note:
        confusions.insert(0, f'<p class="note">{escape(note)}</p>')
    n_side = len(scored.paths)
    data_pairs = [("labels CSV", str(facts.table.csv_path)), ("rows", len(facts.table.paths)),
                  ("heads", f"{len(schema.heads)}: {', '.join(schema.heads)}"),
                  ("image size", f"{facts.config['data']['size']} ({facts.config['data']['resize']})")]
    parts = {
        "subtitle": escape(f"Best checkpoint (epoch {prog.best_epoch}) scored on the {side} side "
                        f"({n_side} images). Run folder {facts.run.resolve()}; report made "
                        f"{time.strftime('%Y-%m-%d %H:%M')}."),
        "warnings": warnings_html(warnings, schema.heads),
        "side": escape(side),
        "rule": escape(rd.rule_title(scored)),
        "metrics": metrics_table(rows, scored.results.mean) + instance_html(scored.results.instance),
        "rules": rd.rules_html(scored),
        "calibration": rd.calibration_html(scored) + "\n".join(reliability),
        "curves": "\n".join(curves) or "<p>No metrics.csv rows: training did not finish an epoch.</p>",
        "confusions": "\n".join(confusions),
        "mistakes": mistakes.mistakes_html(scored),
        "data": kv_table(data_pairs) + data_table(facts, schema, rows),
        "split": kv_table(split_pairs(facts)),
        "training": kv_table(training_pairs(facts, scored)),
        "config": config_html(facts.config),
        "n_boot": N_BOOT,
    }
    return page("report", f"attrfit report: {facts.run.name}", BODY.format(**parts), REPORT_CSS + mistakes.CSS)


REPORT_CSS = """
.warn { background: #fff4e5; border: 1px solid #f0a030; border-radius: 6px; padding: .4em 1.2em; }
.warn h2 { border: 0; margin: .4em 0 0; color: #a05a00; font-size: 1.15em; }
.warn li { margin: .35em 0; }
.ok { background: #eaf7ea; border: 1px solid #5cb85c; border-radius: 6px; padding: .8em 1.2em; }
table.metrics tr:last-child td { border-top: 2px solid #999; }
table.data td:nth-child(3) { font-size: .9em; }
.cms { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.cms figure { margin: 0; max-width: 48%; }
.cms figure.wide { max-width: 100%; }
.config { display: flex; flex-wrap: wrap; gap: 0 2em; align-items: flex-start; }
.config h3 { margin: .8em 0 0; font-size: 1em; }
.config table.kv { font-size: .85em; margin: .2em 0; }
.config table.kv th { width: auto; font-weight: normal; color: #555; }
"""


BODY = """<p class="sub">{subtitle}</p>
{warnings}
<h2>Per-head results ({side} side)</h2>
<p class="sub">Labels by the {rule}.</p>
{metrics}
<p class="note">Balanced accuracy is the mean recall over the classes present; chance for it is 1/K.
The majority class is the train side's most common class; always answering it scores the majority
accuracy, and the gain is accuracy minus that. Intervals are 95% percentile bootstraps over the
{side} images ({n_boot} resamples; the gain's is paired). A head is only useful where its gain or its
balanced accuracy clears the baseline beyond the interval.</p>
<h2>Decision rules ({side} side)</h2>
{rules}
<h2>Calibration ({side} side)</h2>
{calibration}
<h2>Training</h2>
{curves}
<h2>Confusion matrices ({side} side)</h2>
<p class="note">Rows are the true class (with its count), columns the prediction; each cell is the
percentage of its row, so the diagonal is each class's recall. A head that answers one class
shows one dark column.</p>
<div class="cms">
{confusions}
</div>
<h2>Mistakes ({side} side)</h2>
<p class="note">Per head, the class pairs most often confused, and the images the model gets wrong with the
highest confidence (true class, predicted class with its probability, and the probability it gave the
true class). Confident mistakes are often wrong labels: <code>attrfit audit-labels</code> looks for them
on the train and val sides.</p>
{mistakes}
<h2>Data</h2>
{data}
<h2>Split</h2>
{split}
<h2>Run</h2>
{training}
<h2>Config</h2>
{config}
"""
