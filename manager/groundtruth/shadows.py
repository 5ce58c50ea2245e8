"""A shadow's answers weighed against production's: label-free (agreement and score shift, as soon as
both answers are here, in either order) and labelled (once production's answer meets its label).
Each shadow answer counts once in each; its outputs are dropped once it is paired."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from manager.groundtruth.pairing import label_free, labelled
from manager.registry import captures
from manager.registry.captures import SHADOWS
from manager.registry.pairs import Delta
from manager.registry.pairs import add as add_pairs

if TYPE_CHECKING:
    from manager.groundtruth.ingest import IngestReport, QualitySpec

PAIRED_SOURCE = "shadow"


def compare(session: Session, spec: QualitySpec, ids: list[str]) -> None:
    """Label-free evidence for shadow answers whose production answer is here too."""
    deltas: dict[int, dict[str, Delta]] = defaultdict(dict)
    compared: list[str] = []
    for inference_id, rollout_id, shadow_out, production_out in captures.shadow_and_production(
        session, spec.endpoint, ids
    ):
        compared.append(inference_id)
        label_free(
            deltas[rollout_id], spec.kind, spec.threshold, json.loads(production_out), json.loads(shadow_out)
        )
    for rollout_id, measures in deltas.items():
        add_pairs(session, rollout_id, PAIRED_SOURCE, measures)
    captures.update_ids(session.connection(), SHADOWS, spec.endpoint, compared, compared=True)


def pair_labelled(
    session: Session,
    spec: QualitySpec,
    answered: dict[str, Any],
    labels: dict[str, list[list[float]]],
    report: IngestReport,
) -> None:
    """Production answers that just met their label: any shadow answer to the same request becomes
    a labelled pair (its outputs are dropped once counted)."""
    deltas: dict[int, dict[str, Delta]] = defaultdict(dict)
    paired: list[str] = []
    for inference_id, rollout_id, shadow_out in captures.shadow_answers(
        session, spec.endpoint, list(answered)
    ):
        if shadow_out is None:
            continue  # counted already
        paired.append(inference_id)
        labelled(
            deltas[rollout_id],
            spec.kind,
            spec.threshold,
            answered[inference_id],
            json.loads(shadow_out),
            labels[inference_id],
        )
    for rollout_id, measures in deltas.items():
        add_pairs(session, rollout_id, PAIRED_SOURCE, measures)
    report.shadow_pairs += len(paired)
    fields: dict[str, Any] = {"paired": True, "compared": True, "outputs": None}
    captures.update_ids(session.connection(), SHADOWS, spec.endpoint, paired, **fields)
