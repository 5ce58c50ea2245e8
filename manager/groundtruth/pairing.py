"""What a pair (the baseline's and the candidate's answer to the same request) adds to the sums the
paired tests read: label-free at once (do the two predict the same class, how far apart are their
scores), and the per-request outcomes once the label is known. Shared by replay and shadow pairing."""

from __future__ import annotations

from collections.abc import Sequence

from manager.groundtruth.records import Kind, Malformed, outcomes, predicted_class
from manager.registry.pairs import Delta

Rows = Sequence[Sequence[float]]


def label_free(
    deltas: dict[str, Delta], kind: Kind, threshold: float, baseline: Rows, candidate: Rows
) -> bool:
    """The score shift and, for classifiers, the agreement, row by row; False (nothing added) when the
    two answers do not have the same number of rows."""
    if len(candidate) != len(baseline):
        return False
    for b_row, c_row in zip(baseline, candidate, strict=True):
        deltas.setdefault("prediction", Delta()).add(b_row[0], c_row[0])
        if kind == "classification":
            same = predicted_class(b_row, threshold) == predicted_class(c_row, threshold)
            deltas.setdefault("agreement", Delta()).add(0.0, 1.0 if same else 0.0)
    return True


def labelled(
    deltas: dict[str, Delta], kind: Kind, threshold: float, baseline: Rows, candidate: Rows, labels: Rows
) -> bool:
    """Both answers' outcomes against the label (accuracy, or absolute and squared error), row by row;
    False when they cannot be scored (row counts that differ)."""
    try:
        b_outcomes = outcomes(kind, threshold, baseline, labels)
        c_outcomes = outcomes(kind, threshold, candidate, labels)
    except Malformed:
        return False
    for (measure, b_value), (_, c_value) in zip(b_outcomes, c_outcomes, strict=True):
        deltas.setdefault(measure, Delta()).add(b_value, c_value)
    return True
