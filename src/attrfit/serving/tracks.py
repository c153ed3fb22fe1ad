"""Per-track answers: the probabilities of a track's boxes averaged (by area, confidence or equally), each
track's row given as soon as its last box is predicted, so memory holds only the tracks still running."""

from __future__ import annotations

import numpy as np

from attrfit.data.boxes import BoxTable, track_spans
from attrfit.serving.box_crops import BoxOptions, Model


class Tracks:
    """Weighted sums of the probabilities of the tracks still running; a track's row once its last box is in."""

    def __init__(self, table: BoxTable, predictor: Model, opts: BoxOptions):
        self.table, self.predictor, self.opts = table, predictor, opts
        self.count, self.first, self.last = track_spans(table)
        self.done = np.zeros(len(table.tracks), dtype=np.int64)  # boxes seen per track
        self.predicted = np.zeros(len(table.tracks), dtype=np.int64)
        self.sums: dict[int, dict[str, np.ndarray]] = {}  # running tracks only
        self.weight: dict[int, float] = {}

    def add(self, boxes: np.ndarray, probs: dict[str, np.ndarray], weights: np.ndarray) -> None:
        """Add predicted boxes (their probabilities, row k for boxes[k]) to their tracks' sums."""
        t = self.table.track[boxes]
        on = t >= 0
        if not on.any():
            return
        ids, inverse = np.unique(t[on], return_inverse=True)
        w = np.asarray(weights, dtype=np.float64)[on]
        for h, p in probs.items():
            sums = np.zeros((len(ids), p.shape[1]))
            np.add.at(sums, inverse, p[on].astype(np.float64) * w[:, None])
            for j, tid in enumerate(ids):
                acc = self.sums.setdefault(int(tid), {})
                acc[h] = acc.get(h, 0.0) + sums[j]
        for j, tid in enumerate(ids):
            self.weight[int(tid)] = self.weight.get(int(tid), 0.0) + float(w[inverse == j].sum())
        np.add.at(self.predicted, t[on], 1)

    def seen(self, boxes: np.ndarray) -> list[dict]:
        """Count boxes as seen; the rows of the tracks whose last box this was, in the order they ended."""
        rows = []
        for i in boxes:
            t = int(self.table.track[i])
            if t < 0:
                continue
            self.done[t] += 1
            if self.done[t] == self.count[t]:
                rows.append(self._row(t))
        return rows

    def _row(self, t: int) -> dict:
        table, p = self.table, self.predictor
        sums, weight = self.sums.pop(t, None), self.weight.pop(t, 0.0)
        row = {"track_id": table.tracks[t], "first_frame": table.frames[self.first[t]],
               "last_frame": table.frames[self.last[t]], "boxes": int(self.count[t]),
               "predicted": int(self.predicted[t]), "weight": weight}
        if sums is None or weight <= 0:
            blank = dict.fromkeys(p.columns(self.opts.all_probs))
            return {**row, **blank, "error": f"none of its {self.count[t]} boxes could be predicted"}
        mean = {h: (s / weight)[None].astype(np.float32) for h, s in sums.items()}
        return {**row, **p.predictions(mean).rows(self.opts.all_probs)[0], "error": ""}
