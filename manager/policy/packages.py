"""`trigger: {type: modelPackageApproved, modelPackageApproved: {...}}`: roll out each newly approved
version of a SageMaker model package group, and write the outcome back to the package."""

from __future__ import annotations

from pydantic import Field

from manager.policy.specs import Spec

STAGE_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"  # botocore's ModelLifeCycle Stage / StageStatus


class LifeCycle(Spec):
    """What `ModelLifeCycle` the package gets after the rollout (Stage and StageStatus, SageMaker's
    name pattern: `Production`, `Approved`, never a sentence)."""

    stage: str = Field(pattern=STAGE_PATTERN)
    status: str = Field(pattern=STAGE_PATTERN)


class PackageTrigger(Spec):
    group: str = Field(pattern=STAGE_PATTERN)
    # The SQS queue an EventBridge rule feeds with "SageMaker Model Package State Change" events.
    # Without it, ListModelPackages is polled every `pollSeconds`; with it, polling is the backstop.
    queue_url: str | None = Field(None, alias="queueUrl", min_length=1, max_length=2048)
    poll_seconds: float = Field(30.0, alias="pollSeconds", ge=1, le=86_400)
    # How long a message read but not yet acted on stays hidden (SQS's VisibilityTimeout): a daemon that
    # dies before deleting it leaves it to come back after this long.
    visibility_seconds: int = Field(60, alias="visibilitySeconds", ge=1, le=43_200)
    on_promote: LifeCycle = Field(
        default_factory=lambda: LifeCycle(stage="Production", status="Approved"), alias="onPromote"
    )
    on_rollback: LifeCycle = Field(
        default_factory=lambda: LifeCycle(stage="Staging", status="Rejected"), alias="onRollback"
    )
    on_abort: LifeCycle = Field(
        default_factory=lambda: LifeCycle(stage="Staging", status="Aborted"), alias="onAbort"
    )
    # After a rollback, also set the package's ModelApprovalStatus to Rejected.
    reject_on_rollback: bool = Field(False, alias="rejectOnRollback")
