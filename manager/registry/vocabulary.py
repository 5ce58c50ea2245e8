"""The registry's closed sets of values; light enough for the CLI to import at start-up."""

MODEL_STATUSES = ("candidate", "approved", "serving", "retired", "rejected")
RUN_OUTCOMES = ("running", "succeeded", "failed")
PLATFORMS = ("sagemaker",)
ROLLOUT_STATES = (
    "pending",
    "running",
    "paused",
    "promoting",
    "rolling_back",
    "promoted",
    "rolled_back",
    "aborted",
    "failed",
)
ACTIVE_ROLLOUT_STATES = ("pending", "running", "paused", "promoting", "rolling_back")
ROLLOUT_INTENTS = ("pause", "resume", "abort", "promote")
