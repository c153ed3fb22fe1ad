"""What the label audit writes: the suspects CSV, the HTML gallery and the printed summary.

Every output says, per head, whether its out-of-fold model could judge the labels
(:class:`attrfit.training.audit.HeadTrust`): a head whose model does not beat chance gets no suspects
and says so, instead of a list of the model's own mistakes.
"""

from __future__ import annotations

import csv
from pathlib import Path

from attrfit.core import files, outputs
from attrfit.core.errors import AttrfitError
from attrfit.evaluation import mistakes
from attrfit.evaluation.pages import escape, page
from attrfit.training.audit import Audit, HeadTrust, Suspect

GALLERY_PER_HEAD = 24
CSV_COLUMNS = ("image_path", "head", "given_label", "suggested_label", "score", "rank", "side")


def oof_accuracy(audit: Audit, j: int) -> float:
    """Out-of-fold accuracy of head ``j`` against the given labels (see :attr:`Audit.trust` for the whole verdict)."""
    return audit.trust[audit.schema.heads[j]].accuracy


def trust_text(t: HeadTrust) -> str:
    """The numbers behind a head's verdict, in words."""
    lo, hi = t.balanced_accuracy_ci
    return (f"out-of-fold accuracy {t.accuracy:.3f} (majority class {t.majority_accuracy:.3f}), balanced accuracy "
            f"{t.balanced_accuracy:.3f} (95% CI {lo:.3f}-{hi:.3f}, chance {t.chance:.3f}), temperature "
            f"{t.temperature:.2f}")


def verdict(t: HeadTrust) -> str:
    """Why a head has suspects, or why it has none."""
    if t.can_judge:
        return "judged: its out-of-fold model beats chance beyond the 95% interval"
    return ("cannot judge these labels: its out-of-fold model does not beat chance beyond the 95% interval, so its "
            "disagreements with the labels would be its own mistakes; no suspects listed")


def ranked(audit: Audit) -> list[Suspect]:
    """Every suspect, by head in schema order, most suspect first."""
    return [s for h in audit.schema.heads for s in audit.suspects[h]]


def write_csv(audit: Audit, path: Path) -> Path:
    with files.atomic_open(path, "the label-issues CSV", text=True, newline="", encoding="utf-8",
                           errors="surrogateescape") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        for s in ranked(audit):
            w.writerow([audit.paths[s.row], s.head, s.given, s.suggested, f"{s.score:.4f}", s.rank,
                        audit.sides[s.row]])
    return path


def suspect_card(audit: Audit, s: Suspect) -> str:
    path = audit.paths[s.row]
    return mistakes.card_html(audit.images[s.row], [f"#{s.rank} {Path(path).name}", f"given: {s.given}",
                                                    f"suggested: {s.suggested}", f"p(given) {s.score:.2f}"], path)


def gallery_html(audit: Audit, per_head: int = GALLERY_PER_HEAD) -> str:
    """One self-contained page: per head, its verdict, its count of suspects and the top ``per_head`` as cards."""
    n = len(audit.paths)
    parts = []
    for h in audit.schema.heads:
        found, t = audit.suspects[h], audit.trust[h]
        cards = "".join(suspect_card(audit, s) for s in found[:per_head])
        shown = f"; the {min(per_head, len(found))} most suspect" if found else ""
        parts.append(f'<div class="mistakes"><h3>{escape(h)}: {len(found)} suspects of {t.n} labelled rows{shown}'
                     f'</h3><p class="note">{escape(verdict(t))}; {escape(trust_text(t))}.</p>'
                     f'<div class="gallery">{cards}</div></div>')
    folds = int(audit.folds.max()) + 1
    intro = escape(f"{n} rows of the train and val sides of {audit.csv} (the test side is not read), "
                   f"{folds}-fold cross-fitted, the out-of-fold probabilities temperature-scaled per head. Suspects "
                   "per head by cleanlab's confident learning, most suspect first, only for heads whose out-of-fold "
                   "model beats chance (the lower end of the 95% bootstrap interval of its balanced accuracy above "
                   "1/K); p(given) is the out-of-sample probability of the given label. The full list is in the CSV. "
                   "Nothing in the labels CSV was changed.")
    body = f'<p class="note">{intro}</p>\n' + "\n".join(parts)
    return page("audit-labels", f"attrfit label audit: {audit.csv.name}", body, mistakes.CSS)


def check_outputs(out_csv: Path, out_html: Path, force: bool, reads: outputs.Protected) -> None:
    """Refuse outputs that replace an input or a run's file (ever) or an existing file (without ``force``),
    before the work (:mod:`attrfit.core.outputs`)."""
    if out_csv.resolve() == out_html.resolve():
        raise AttrfitError(f"the CSV and the HTML output are the same file {out_csv}; give different names")
    outputs.check_output(out_csv, force, reads, "label-issues CSV")
    outputs.check_output(out_html, force, reads, "label-issues gallery", flag="--html")


def write_outputs(audit: Audit, out_csv: Path, out_html: Path, per_head: int = GALLERY_PER_HEAD) -> None:
    write_csv(audit, out_csv)
    files.write_text(out_html, gallery_html(audit, per_head), "the label-issues gallery")


def summary(audit: Audit) -> str:
    """Per head: its verdict, the suspects found among the labelled audited rows, and the top one."""
    lines = [f"{len(audit.paths)} rows audited (train and val sides), {int(audit.folds.max()) + 1} folds"]
    for h in audit.schema.heads:
        found, t = audit.suspects[h], audit.trust[h]
        if not t.can_judge:
            lines.append(f"  {h}: cannot judge its labels (no suspects): {trust_text(t)}")
            continue
        top = (f"; most suspect {audit.paths[found[0].row]} ({found[0].given} -> {found[0].suggested}, "
               f"p {found[0].score:.2f})" if found else "")
        lines.append(f"  {h}: {len(found)} of {t.n} ({len(found) / max(1, t.n):.1%}), {trust_text(t)}{top}")
    return "\n".join(lines)
