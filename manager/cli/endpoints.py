"""`variantctl endpoints list|show`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from manager.cli.context import AppContext, pass_app
from manager.cli.render import emit, emit_record, output_option

if TYPE_CHECKING:
    from manager.registry.tables import Endpoint

LIST_COLUMNS = ("endpoint", "platform", "region", "status", "config", "variants", "observed_at")


def endpoint_row(row: Endpoint) -> dict[str, Any]:
    config = row.current_config
    variants = [
        {
            "variant": v.variant_name,
            "model": v.model_version.ref,
            "weight": v.initial_weight,
            "instance_type": v.instance_type,
            "instance_count": v.instance_count,
            "shadow": v.is_shadow,
        }
        for v in (config.variants if config else [])
    ]
    return {
        "endpoint": row.name,
        "platform": row.platform,
        "region": row.region,
        "status": row.last_status,
        "config": config.name if config else None,
        "variants": {v["variant"]: f"{v['model']} w={v['weight']:g}" for v in variants},
        "variant_details": variants,
        "observed_at": row.last_observed_at,
        "created_at": row.created_at,
    }


@click.group("endpoints")
def endpoints_group() -> None:
    """Endpoints and the variants they serve."""


@endpoints_group.command("list")
@output_option
@pass_app
def list_endpoints(app: AppContext, output: str) -> None:
    """List endpoints with their current config and variants."""
    from manager.registry import endpoints

    with app.database().read() as session:
        rows = [endpoint_row(r) for r in endpoints.list_endpoints(session)]
    emit(rows, LIST_COLUMNS, output, title="endpoints", empty="no endpoints yet")


@endpoints_group.command("show")
@click.argument("name")
@output_option
@pass_app
def show(app: AppContext, name: str, output: str) -> None:
    """Show one endpoint."""
    from manager.metrics.groundtruth import ingest_status
    from manager.registry import endpoints

    with app.database().read() as session:
        record = endpoint_row(endpoints.get(session, name))
        ingest = ingest_status(session, name)
    if output == "table":
        record.pop("variant_details")
        record["ingested records"] = ingest["records_read"]
        record["malformed skipped"] = ingest["malformed_skipped"]
        record["waiting for labels"] = ingest["predictions_waiting_for_labels"]
        record["read errors"] = "; ".join(ingest["read_errors"]) or None
    else:
        record["ingestion"] = ingest
    emit_record(record, output, title=name)
