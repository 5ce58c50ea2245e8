"""Webhooks: event notifications (JSON or Slack's incoming-webhook format, signed with HMAC-SHA256,
delivered at least once under an idempotency key, retried with exponential backoff) and gates
(`confirm-rollout`, `pre-rollout`, `confirm-promotion`, asked until they answer 2xx).

Everything here runs in the daemon's webhook job (`worker.run`), never in the reconcile tick: the
tick only reads what gates answered (`rollout.gates`), and the history is the outbox events are
fanned out from (`deliveries.fan_out`), so an event is never lost to a crash between the two.
"""
