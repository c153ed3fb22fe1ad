"""The report's sections on decisions: every rule's numbers side by side, and how far the probabilities can be
trusted (calibration: per-head expected calibration error and Brier score, and the reliability diagram).

Both read an :class:`attrfit.evaluation.scoring.Scored`: its results hold each rule's numbers and the
calibration where the run has decisions.json; a run without one shows its model's own probabilities.
"""

from __future__ import annotations

import math

from attrfit.core.formatting import number
from attrfit.evaluation.calibration import BINS, calibration_of, reliability
from attrfit.evaluation.decisions import MOST_PROBABLE, describe
from attrfit.evaluation.figures import png_bytes, reliability_figure
from attrfit.evaluation.pages import Html, escape, html_table
from attrfit.evaluation.results import Calibration

RELIABILITY_PNG = "reliability.png"


def _mean(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else number(x)


def rules_html(scored) -> Html:
    """Every rule's means on the same images (the rule of the report's tables marked), and what each rule is."""
    results = scored.results
    if not results.rules:
        return Html('<p class="note">This run has no decisions.json (it was made before decision rules were saved '
                    "with runs): its labels are the most probable class. <code>attrfit report RUN --decide "
                    "prior-corrected</code> fits the other rules on its val side for one report.</p>")
    binary = any(m.instance is not None for m in results.rules.values())
    header = ["rule", "mean accuracy", "mean balanced acc.", "mean macro-F1"] + (["mA", "instance F1"] if binary else [])
    rows = []
    for rule, m in results.rules.items():
        name = Html(f"<b>{escape(rule)}</b> (these tables)") if rule == scored.rule else rule
        extra = [_mean(m.instance.mA), _mean(m.instance.f1)] if binary and m.instance else [""] * (2 * binary)
        rows.append([name, _mean(m.mean.accuracy), _mean(m.mean.balanced_accuracy), _mean(m.mean.macro_f1), *extra])
    lines = "".join(f"<li>{escape(describe(r, scored.decisions))}</li>" for r in results.rules)
    d = scored.decisions
    fitted = (f"Fitted on the val side ({d.fitted_on.rows} images) for {d.checkpoint.file}; the run's objective is "
              f"{d.objective}, so its own rule is {d.rule}." if d is not None else "")
    return Html(html_table(header, rows, "metrics") + f"<ul class=\"note\">{lines}</ul><p class=\"note\">"
                f"{escape(fitted)} Every rule is scored on the same images; compare runs under one rule with "
                "<code>attrfit compare A B --decide RULE</code>.</p>")


def calibration(scored) -> Calibration:
    """The scored side's calibration: from the results, or (a run without decisions) of its own softmax."""
    if scored.results.calibration is not None:
        return scored.results.calibration
    raw = scored.raw_probs if scored.raw_probs is not None else scored.probs
    return calibration_of(raw, scored.probs, scored.labels, scored.schema, [1.0] * len(scored.schema.heads))


def calibration_html(scored) -> Html:
    """Per head: the temperature, and ECE and Brier score before and after it."""
    cal = calibration(scored)
    rows = [[h, number(c.temperature, "{:.3g}"), _mean(c.ece_uncalibrated), _mean(c.ece), _mean(c.brier_uncalibrated),
             _mean(c.brier), c.n] for h, c in cal.heads.items()]
    rows.append([Html("<b>mean</b>"), "", _mean(cal.mean("ece_uncalibrated")), _mean(cal.mean("ece")),
                 _mean(cal.mean("brier_uncalibrated")), _mean(cal.mean("brier")), ""])
    table = html_table(["head", "temperature", "ECE, temperature 1", "ECE", "Brier, temperature 1", "Brier", "n"],
                       rows, "metrics")
    none = "" if scored.decisions is not None else " No temperatures were fitted for this run (no decisions.json)."
    return Html(table + f'<p class="note">ECE: the {cal.bins} equal-width bins of the top probability, the gap '
                "between accuracy and mean top probability in each, weighted by its rows. Brier: the mean squared "
                "error of the probabilities to the one-hot label (0 is perfect, 2 the worst). The temperature "
                "divides each head's logits; fitted on the val side by log-likelihood, it changes no most probable "
                f"class.{escape(none)}</p>")


def reliability_png(scored) -> tuple[str, bytes]:
    """(caption, PNG) of the reliability diagram pooled over the heads."""
    raw = scored.raw_probs if scored.raw_probs is not None else scored.probs
    before, after = reliability(raw, scored.labels, BINS), reliability(scored.probs, scored.labels, BINS)
    caption = (f"Reliability pooled over every head's labelled {scored.results.side or ''} rows: in each of {BINS} "
               "bins of the top probability, how often the most probable class is right. On the diagonal, a "
               "probability of 0.8 is right 8 times in 10.")
    return caption, png_bytes(reliability_figure(before, after, len(scored.schema.heads)))


def rule_title(scored) -> str:
    """The rule the report's tables use, as a title says it."""
    return describe(scored.rule or MOST_PROBABLE, scored.decisions)
