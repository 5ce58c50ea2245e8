"""The rows the CLI's tables and records and the dashboard's pages show, from the registry's rows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from manager.registry.rollouts import RolloutView
    from manager.registry.tables import AuditEvent, Endpoint, ModelVersion

ROLLOUT_COLUMNS = (
    "rollout",
    "endpoint",
    "baseline",
    "candidate",
    "state",
    "step",
    "phase",
    "weight",
    "age",
    "duration",
    "intent",
    "reason",
)  # the columns of `rollout list` and the dashboard's rollouts page (age: since it started; duration:
# how long it ran, or has run)


def endpoint_row(row: Endpoint, rollout: RolloutView | None = None) -> dict[str, Any]:
    """An endpoint as every surface lists it. With the `rollout` under way on it, the two variants it
    moves carry the weights in force (a rollout shifts them with UpdateEndpointWeightsAndCapacities,
    not a new config: issue 31, the candidate was listed at its config's 0% while it took 10%)."""
    config = row.current_config
    in_force: dict[str, float] = {k: float(w) for k, w in (row.weights or {}).items()}  # an operator's
    if rollout is not None and rollout.endpoint == row.name:
        in_force = {
            rollout.baseline_variant: 100.0 - rollout.weight,
            rollout.candidate_variant: rollout.weight,
        }
    variants = [
        {
            "variant": v.variant_name,
            "model": v.model_version.ref,
            "weight": in_force.get(v.variant_name, v.initial_weight),
            "instance_type": v.instance_type,
            "instance_count": v.instance_count,
            "shadow": v.is_shadow,
        }
        for v in (config.variants if config else [])
    ]
    # a variant's share is its weight over the sum of all production variants' (weights are relative)
    weights = [float(v["weight"] or 0) for v in variants]
    total = sum(w for w, v in zip(weights, variants, strict=True) if not v["shadow"])
    for w, v in zip(weights, variants, strict=True):
        v["share"] = None if v["shadow"] else (100.0 * w / total if total > 0 else 0.0)
    return {
        "endpoint": row.name,
        "platform": row.platform,
        "region": row.region,
        "status": row.last_status,
        "config": config.name if config else None,
        "variants": {
            v["variant"]: f"{v['model']} w={v['weight']:g}"
            + (f" ({v['share']:.4g}%)" if v["share"] is not None else " (shadow)")
            for v in variants
        },
        "variant_details": variants,
        "observed_at": row.last_observed_at,
        "created_at": row.created_at,
    }


def model_row(row: ModelVersion) -> dict[str, Any]:
    return {
        "model": row.ref,
        "name": row.name,
        "version": row.version,
        "status": row.status,
        "framework": row.framework,
        "framework_version": row.framework_version,
        "artifact_uri": row.artifact_uri,
        "image_uri": row.image_uri,
        "metrics": row.metrics,
        "dataset_fingerprint": row.dataset_fingerprint,
        "training_run_id": row.training_run_id,
        "replaces": row.replaces.ref if row.replaces else None,
        "description": row.description,
        "model_package": package_lineage(row.model_package_arn),
        "created_at": row.created_at,
    }


def package_lineage(arn: str | None) -> str | None:
    """A model package ARN with its group and version spelt out: `group/3 (arn:...)`."""
    if not arn:
        return None
    tail = arn.split(":model-package/", 1)[-1]
    return f"{tail} ({arn})"


def writebacks_of(session: Any, version: ModelVersion) -> list[str]:
    """Each rollout of `version` whose outcome goes to its package: done, or pending with its tries."""
    from sqlalchemy import select

    from manager.registry.tables import PackageWriteback, Rollout

    rows = session.scalars(
        select(PackageWriteback)
        .join(Rollout, Rollout.id == PackageWriteback.rollout_id)
        .where(Rollout.candidate_version_id == version.id)
        .order_by(PackageWriteback.rollout_id)
    )
    out = []
    for w in rows:
        if w.state == "done":
            out.append(f"rollout {w.rollout_id}: written {w.done_at:%Y-%m-%d %H:%M:%S}Z")
        else:
            tried = f", {w.attempts} failed, last: {w.last_error}" if w.attempts else ""
            out.append(f"rollout {w.rollout_id}: pending{tried}")
    return out


def metrics_text(metrics: dict[str, Any]) -> str:
    """Every split's metrics on one line each, to 4 significant digits: `test: accuracy 0.9474, ...`."""

    def cells(values: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())

    splits = {k: v for k, v in metrics.items() if isinstance(v, dict)}
    flat = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    lines = [f"{split}: {cells(values)}" for split, values in splits.items()]
    if flat:
        lines.append(cells(flat))
    return "; ".join(lines) or "-"


def headline(metrics: dict[str, Any]) -> str:
    """The test metrics when training recorded splits, else the flat metrics, to 3 decimals."""
    chosen = metrics.get("test") or metrics.get("validation") or metrics
    return ", ".join(
        f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
        for k, v in chosen.items()
        if not isinstance(v, dict)
    )


def event_row(row: AuditEvent) -> dict[str, Any]:
    """An event as `audit export` records it, with `at` as an instant and the subject in one column."""
    from manager.history.exports import record

    return {**record(row), "at": row.at, "subject": f"{row.subject_type}/{row.subject_id}"}
