"""``attrfit compare``'s output: the terminal table and the self-contained HTML page.

Example:
    >>> c = compare_runs(["runs/a", "runs/b"])  # doctest: +SKIP
    >>> print(format_comparison(c))  # doctest: +SKIP
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

from attrfit.core import files
from attrfit.core.formatting import number, signed
from attrfit.evaluation.compare import Comparison, Diff, RunInfo, method_text
from attrfit.evaluation.figures import curves_figure, png_bytes
from attrfit.evaluation.pages import Html, escape, html_table, page, png_figure


def weights_text(r: RunInfo) -> str:
    """Which weights were scored: 'best epoch 3 of 12', or 'last.pt, epoch 12 of 12'."""
    if r.checkpoint == "best.pt":
        return f"best epoch {r.best_epoch} of {r.epochs_done}"
    return f"{r.checkpoint}, epoch {r.epoch} of {r.epochs_done}"


def _diff_text(d: Diff) -> str:
    return f"{signed(d.value):>6}  {signed(d.ci[0]):>6} to {signed(d.ci[1]):<6}  {d.verdict}"


def format_comparison(c: Comparison) -> str:
    """The terminal table: runs, settings that differ, then one block per metric."""
    lines = [f"compared on the same {c.n_images} test images (split assignment {c.assignment[:12]}), labels by the "
             f"decision rule {c.rule}; each run minus run A, paired bootstrap 95% CI ({c.n_boot} resamples)", ""]
    for r in c.runs:
        rate = f"{number(r.images_per_s, '{:.0f}')} img/s"
        lines.append(f"  {r.label}  {r.path}   {weights_text(r)}   "
                     f"wall {number(r.wall_s, '{:.1f}')} s   {rate}")
    lines.append("")
    if c.config_diff:
        lines.append("settings that differ:")
        for key, values in c.config_diff:
            lines.append(f"  {key:<28} " + "   ".join(f"{r.label} {v}" for r, v in zip(c.runs, values)))
    else:
        lines.append("settings: identical (the runs differ only by chance, e.g. thread timing or machine)")
    width = max([len(r.name) for r in c.rows] + [6])
    for metric in dict.fromkeys(r.metric for r in c.rows):
        lines += ["", _block_header(metric.replace("_", " "), c, width)]
        for row in (r for r in c.rows if r.metric == metric):
            vals = " ".join(f"{number(v):>6}" for v in row.values)
            diffs = "   ".join(_diff_text(d) for d in row.diffs[1:])
            lines.append(f"  {row.name:<{width}} {vals}   {diffs}")
    lines += ["", wrap(method_text(c), 100)]
    return "\n".join(lines)


def _block_header(title: str, c: Comparison, width: int) -> str:
    runs = " ".join(f"{r.label:>6}" for r in c.runs)
    diffs = "   ".join(f"{r.label + '-A':>6}  {'95% CI':^16}  verdict" for r in c.runs[1:])
    return f"{title}\n  {'':<{width}} {runs}   {diffs}"


def wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width))


# ---------------------------------------------------------------- the page

def render_html(c: Comparison) -> str:
    """A self-contained page (figure embedded as a data: URI), styled like the report."""
    runs = html_table(["run", "folder", "weights", "epochs", "wall time (s)", "images/s", "max LR", "precision"],
                      [[r.label, r.path, weights_text(r), f"{r.epochs_done} of {r.epochs}", number(r.wall_s, "{:.1f}"),
                        number(r.images_per_s, "{:.0f}"), number(r.max_lr, "{:.4g}"), r.precision] for r in c.runs])
    diff = (html_table(["setting"] + [r.label for r in c.runs], [[k, *map(str, v)] for k, v in c.config_diff])
            if c.config_diff else Html("<p>The runs have identical settings.</p>"))
    blocks = []
    for metric in dict.fromkeys(r.metric for r in c.rows):
        header = ["head"] + [r.label for r in c.runs]
        for r in c.runs[1:]:
            header += [f"{r.label} - A (95% CI)", "verdict"]
        body = []
        for row in (r for r in c.rows if r.metric == metric):
            cells = [Html(f"<b>{escape(row.name)}</b>") if row.summary else row.name] + [number(v) for v in row.values]
            for d in row.diffs[1:]:
                cells += [Html(f'{escape(signed(d.value))} <span class="ci">{escape(signed(d.ci[0]))} – '
                               f'{escape(signed(d.ci[1]))}</span>'),
                          Html(f'<span class="{_verdict_class(d.verdict)}">{escape(d.verdict)}</span>')]
            body.append(cells)
        blocks.append(f"<h2>{escape(metric.replace('_', ' '))}</h2>" + html_table(header, body, "metrics"))
    fig = png_figure("curves.png", "Val mean accuracy (with run A's majority baseline) and val mean balanced "
                      "accuracy per epoch, and against training wall time.", png_bytes(curves_figure([f"{r.label}: {r.path}" for r in c.runs], c.curves)))
    title = f"attrfit compare: {', '.join(r.label + ' ' + Path(r.path).name for r in c.runs)}"
    body = BODY.format(runs=runs, diff=diff, blocks="\n".join(blocks), fig=fig, method=escape(method_text(c)),
                       sub=escape(f"{c.n_images} test images, the same for every run (split assignment "
                                  f"{c.assignment[:12]}); made {time.strftime('%Y-%m-%d %H:%M')}."))
    return page("compare", title, body, VERDICT_CSS)


def _verdict_class(v: str) -> str:
    return {"better": "better", "worse": "worse"}.get(v, "same")


VERDICT_CSS = """
.better { color: #1a7f37; font-weight: 600; } .worse { color: #b42318; font-weight: 600; } .same { color: #555; }
"""


BODY = """<p class="sub">{sub}</p>
<h2>Runs</h2>
{runs}
<h2>Settings that differ</h2>
{diff}
{blocks}
<p class="note">{method}</p>
<h2>Validation curves</h2>
{fig}
"""


def write_html(c: Comparison, out: str | Path) -> Path:
    """Write the page atomically (see :mod:`attrfit.core.files`)."""
    return files.write_text(Path(out), render_html(c), what="comparison page", hint="give --html a writable path")
