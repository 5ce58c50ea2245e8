"""Ground truth for every active rollout with quality metrics (`manager.groundtruth.ingest`). One
endpoint's trouble (a policy that no longer parses, an unreachable bucket) is logged and never stops
the others."""

from __future__ import annotations

import logging
from typing import Any

from manager.daemon.runtime import RUNTIMES
from manager.errors import UserError

log = logging.getLogger("variantctl.daemon")


REPORTED: dict[int, str] = {}  # rollout -> the ingestion error last logged for it (logged once)


def ingest_job(url: str) -> None:
    from manager.registry.rollouts import active_policies

    runtime = RUNTIMES[url]
    with runtime.database.read() as session:
        rows = active_policies(session)
    for rollout_id, text in rows:
        fields: dict[str, Any] = {"rollout": rollout_id, "job": "ingest"}
        try:
            ingested = _ingest(runtime.ingestor, rollout_id, text, fields)
        except Exception as exc:
            said = f"{type(exc).__name__}: {exc}"
            if REPORTED.get(rollout_id) == said:
                continue  # said once already: the same failure every run is not news
            REPORTED[rollout_id] = said
            expected = isinstance(exc, UserError | OSError) or type(exc).__module__.startswith("botocore")
            log.error(
                "ingest for rollout %s failed: %s: %s",
                rollout_id,
                type(exc).__name__,
                str(exc).splitlines()[0] if str(exc) else "",
                exc_info=not expected,
                extra={"fields": {**fields, "error_type": type(exc).__name__, "error": str(exc)}},
            )
            continue
        if REPORTED.pop(rollout_id, None) is not None:
            log.info("ingest for rollout %s works again", rollout_id, extra={"fields": fields})
        if ingested is not None:
            _log_report(fields, *ingested)


def _ingest(ingestor: Any, rollout_id: int, text: str, fields: dict[str, Any]) -> tuple[str, Any] | None:
    """(endpoint, report) of one rollout's ingestion; None when its policy has no quality metric."""
    from manager import policy as policies
    from manager.groundtruth.ingest import QualitySpec

    policy = policies.parse(text, f"rollout {rollout_id}'s policy")
    target = policy.target
    if not (
        target.capture_destination
        and target.ground_truth
        and any(m.source == "quality" for m in policy.metrics)
    ):
        return None
    fields["endpoint"] = target.endpoint
    spec = QualitySpec(
        target.endpoint, target.capture_destination, target.ground_truth, kind=policy.quality_kind
    )
    adjusted = [m for m in policy.metrics if m.adjust != "none"]
    if adjusted:
        _covariate(ingestor, rollout_id, spec, adjusted[0].measure, fields)
    return target.endpoint, ingestor.run(spec)


def _covariate(ingestor: Any, rollout_id: int, spec: Any, measure: str, fields: dict[str, Any]) -> None:
    """Before a rollout's first ingestion: its pre-period covariate, fitted on the baseline's history
    before the start (or recorded as impossible, and the test is the unadjusted one). Once."""
    from manager.groundtruth import prehistory
    from manager.registry import covariates
    from manager.registry.tables import Rollout

    with ingestor.database.read() as session:
        if covariates.decided(session, [rollout_id]):
            return
        rollout = session.get(Rollout, rollout_id)
        if rollout is None:
            return
        variant, started = rollout.baseline_variant, rollout.created_at
    fitted, reason = prehistory.fit(
        lambda uri: ingestor.stores(uri, ingestor.s3_client), spec, variant, measure, started
    )
    with ingestor.database.write() as session:
        rollout = session.get(Rollout, rollout_id)
        if rollout is not None:
            covariates.save(session, rollout, fitted, reason, ingestor.clock())
    log.info("rollout %s: pre-period covariate: %s", rollout_id, reason, extra={"fields": fields})


def _log_report(fields: dict[str, Any], endpoint: str, report: Any) -> None:
    if not (
        report.predictions
        or report.labels
        or report.malformed
        or report.file_errors
        or report.shadow_answers
        or report.expired_shadow_answers
        or report.replaced_files
    ):
        return
    counts = {
        "predictions": report.predictions,
        "labels": report.labels,
        "joined": report.joined,
        "duplicates": report.duplicates,
        "malformed": report.malformed,
        "outside_rollout": report.outside_rollout,
        "replayed": report.replayed,
        "shadow_answers": report.shadow_answers,
        "shadow_pairs": report.shadow_pairs,
        "expired_shadow_answers": report.expired_shadow_answers,
        "expired": report.expired_predictions + report.expired_labels,
        "unreadable_files": len(report.file_errors),
        "files_rewritten_and_read_again": report.replaced_files,
    }
    log.log(
        logging.WARNING if report.file_errors else logging.INFO,
        "ingested %s: %s%s",
        endpoint,
        ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items() if n),
        f"; {report.file_errors[0]}" if report.file_errors else "",
        extra={"fields": {**fields, **counts}},
    )
