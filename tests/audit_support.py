"""Forging exported history as an attacker would: records rewritten with every hash recomputed."""

from __future__ import annotations

from typing import Any

from manager.history import audit


def rechain(records: list[dict[str, Any]], previous: str) -> None:
    """Recompute each record's `prev_hash` and `hash`, in place, chaining from `previous`: a chain
    that is consistent in itself, whatever was edited in it."""
    for record in records:
        record["prev_hash"] = previous
        record["hash"] = previous = audit.hash_fields(
            previous,
            record["seq"],
            record["at"],
            record["actor"],
            record["action"],
            record["subject_type"],
            record["subject_id"],
            record["endpoint"],
            record["model"],
            record["reason"],
            audit.canonical_json(record["payload"]),
        )
