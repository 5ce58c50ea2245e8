"""Replay: recent captured requests, sent again to the candidate at weight 0, each answer paired with
the baseline's captured answer to the same request (and its label, when one came).

Two parts, both safe to repeat and to interrupt anywhere:
- the plan, made once when a rollout reaches its replay step: the baseline variant's capture records
  in the policy's window that hold the request body (with their labels, joined by inference id),
  newest first or a seeded sample, up to `requests`; written with the rollout's `replay` column in
  one transaction, so a crash leaves no plan or the whole plan;
- the sending, while the rollout runs at weight 0 past that step: queued requests go to the
  candidate with `TargetVariant`, at most `maxRequestsPerSecond`, and each answer is recorded with
  the sums the paired tests read in the transaction that marks its request done. A request sent but
  not recorded before a crash is sent again and counted once; replay resumes where it stopped.

Each replayed request carries an inference id of its own (`REPLAY_PREFIX`...), so the candidate's
captured answers are recognised by ingestion and never counted as live traffic.
"""

from __future__ import annotations

from sqlalchemy import select

from manager import policy as policies
from manager.errors import UserError
from manager.platforms.base import PlatformError
from manager.registry.tables import Endpoint, EndpointLease, Rollout
from manager.rollout.replay_base import (
    NO_INPUT,
    Active,
    ReplayReport,
    log,
    replay_id,
)
from manager.rollout.replay_plan import ReplayPlanning
from manager.rollout.replay_send import ReplaySending

__all__ = ["NO_INPUT", "ReplayReport", "Replayer", "replay_id"]


class Replayer(ReplayPlanning, ReplaySending):
    """Plans and sends the replays of every running rollout at a replay step (`run`)."""

    def run(self) -> list[ReplayReport]:
        """Plan or send for every running rollout that is in (or past) a replay step at weight 0; one
        rollout's trouble is logged and never stops another's."""
        reports = []
        for active in self._active():
            try:
                reports.append(self.run_one(active))
            except Exception as exc:
                expected = isinstance(exc, PlatformError | UserError | OSError)
                log.warning(
                    "replay for rollout %s: %s: %s",
                    active.rollout_id,
                    type(exc).__name__,
                    exc,
                    exc_info=not expected,
                    extra={"fields": {"rollout": active.rollout_id, "job": "replay"}},
                )
        return reports

    def _active(self) -> list[Active]:
        now = self.clock()
        with self.database.read() as session:
            rows = session.execute(
                select(Rollout, Endpoint.name, EndpointLease.owner, EndpointLease.expires_at)
                .join(Endpoint, Endpoint.id == Rollout.endpoint_id)
                .outerjoin(EndpointLease, EndpointLease.endpoint == Endpoint.name)
                .where(Rollout.state == "running", Rollout.weight <= 0)
                .order_by(Rollout.id)
            ).all()
            out = []
            for rollout, endpoint, owner, expires in rows:
                if self.owner and owner not in (None, self.owner) and expires is not None and expires > now:
                    continue  # another daemon works this endpoint
                if "replay" not in rollout.policy_yaml or rollout.pending:
                    continue  # (a JSON column: SQL NULL and JSON null both read as None)
                try:
                    policy = policies.parse(rollout.policy_yaml, f"rollout {rollout.id} policy")
                except UserError:
                    continue  # the reconciler reports a policy that no longer parses
                index = next((i for i, s in enumerate(policy.plan) if s.replay), None)
                if index is None or rollout.step < index or rollout.shadow_config is not None:
                    continue
                plan = rollout.replay
                if plan is not None and plan.get("refused"):
                    continue
                step = policy.plan[index].replay
                assert step is not None
                out.append(
                    Active(
                        rollout.id,
                        endpoint,
                        policy,
                        index,
                        step,
                        rollout.baseline_variant,
                        rollout.candidate_variant,
                        plan is not None,
                    )
                )
            return out

    def run_one(self, active: Active) -> ReplayReport:
        if not active.planned:
            return self.plan(active)
        return self.send(active)
