"""Scheduled jobs the SageMaker way (issue 30): a cron retrain registers a model package, a person
approves it in the Model Registry, the approval starts the rollout, and the outcome goes back to the
package. The daemon's jobs run in this process, on the local SageMaker, against real boto3 clients;
tests/test_model_packages_daemon.py runs the same under real daemons."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from manager import daemon
from manager.cli.main import cli
from manager.history import audit
from manager.platforms.packages import ModelRegistry
from manager.registry import models
from manager.registry import packages as rows

from .local_sagemaker_support import flaky_artifact
from .rollout_support import ENDPOINT, World, make_world

pytestmark = pytest.mark.backends

POLICY = f"""
name: approvals
target:
  endpoint: {ENDPOINT}
  candidate: {{model: churn, newestApproved: true}}
steps: [{{setWeight: {{percent: 50}}}}, {{analysis: {{}}}}]
metrics:
  - {{name: 5xx, source: cloudwatch, measure: errors_5xx, kind: errors, higherIsBetter: false,
     role: primary, minSamples: 30, onNoData: pass}}
decisions: {{maxDuration: 5m}}
trigger:
  type: modelPackageApproved
  modelPackageApproved: {{group: churn-models, rejectOnRollback: trueQUEUE}}
"""


@contextmanager
def jobs(world: World) -> Iterator[ModelRegistry]:
    """The runtime the daemon's jobs use, on this world's local SageMaker."""
    host = world.host
    registry = ModelRegistry(host.client("sagemaker"), host.client("sqs"), host.client("s3"))
    daemon.RUNTIMES[world.database.url] = daemon.runtime.Runtime(
        world.database, world.reconciler(), None, model_registry=registry
    )
    try:
        yield registry
    finally:
        del daemon.RUNTIMES[world.database.url]
        daemon.jobs.packages.LAST_POLL.clear()


def _folder(tmp_path: Path, queue: str = "", extra: str = "") -> Path:
    folder = tmp_path / "policies"
    folder.mkdir(exist_ok=True)
    (folder / "approvals.yaml").write_text(POLICY.replace("QUEUE", queue) + extra)
    return folder


def _package(world: World, artifact: Path, status: str = "PendingManualApproval") -> str:
    sm = world.host.client("sagemaker")
    if not sm.list_model_package_groups(NameContains="churn-models")["ModelPackageGroupSummaryList"]:
        sm.create_model_package_group(ModelPackageGroupName="churn-models")
    spec = {"Containers": [{"Image": "local/sklearn:1.9", "ModelDataUrl": artifact.as_uri()}]}
    arn: str = sm.create_model_package(
        ModelPackageGroupName="churn-models", InferenceSpecification=spec, ModelApprovalStatus=status
    )["ModelPackageArn"]
    return arn


def _approve(world: World, arn: str) -> None:
    """As an approver would: `aws sagemaker update-model-package --model-approval-status Approved`."""
    world.host.client("sagemaker").update_model_package(
        ModelPackageArn=arn, ModelApprovalStatus="Approved", ApprovalDescription="reviewed by a person"
    )


def _started(world: World) -> list[dict[str, Any]]:
    events = audit.history(world.database, audit.HistoryFilter(action="package.rollout"))
    return [json.loads(e.payload) for e in reversed(events)]


def _outcome_event(world: World, rollout: int) -> audit.AuditEvent:
    ends = [
        e
        for e in audit.history(world.database, audit.HistoryFilter(rollout=rollout))
        if e.subject_id == str(rollout) and e.action in ("rollout.promoted", "rollout.rolled_back")
    ]
    assert len(ends) == 1
    return ends[0]


def test_a_cron_retrain_registers_a_package_and_its_approval_rolls_it_out_and_back(
    tmp_path: Path, artifacts: dict[str, Path], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = tmp_path / "train.yaml"
    train.write_text(
        "model: churn\nestimator: logistic_regression\nobjective: {metric: roc_auc}\n"
        f"output: {tmp_path / 'artifacts'}\n"
    )
    retrain = f"  cron: '0 3 * * *'\n  retrain: {{data: 'sklearn:breast_cancer', config: '{train}'}}\n"
    folder = _folder(tmp_path, extra=retrain)
    night = datetime(2026, 12, 1, 3, tzinfo=UTC)
    monkeypatch.setattr(daemon.runtime, "last_fire_time", lambda _cron, _now, _lookback: night)
    with make_world(tmp_path, artifacts, url=db_url) as world, world.traffic(), jobs(world) as registry:
        sm = world.host.client("sagemaker")
        # 1. the cron retrain registers a package, waiting for a person
        daemon.retrain_job(world.database.url, str(folder / "approvals.yaml"), "retrain:approvals")
        [summary] = sm.list_model_packages(ModelPackageGroupName="churn-models")["ModelPackageSummaryList"]
        assert summary["ModelApprovalStatus"] == "PendingManualApproval"
        with world.database.read() as session:
            trained = models.get(session, "churn:3")
            assert trained.model_package_arn == summary["ModelPackageArn"]
        assert not audit.history(world.database, audit.HistoryFilter(action="rollout.start"))
        daemon.package_job(world.database.url, str(folder))
        assert not _started(world), "nothing is approved yet"
        # 2. a person approves it; 3. the next poll starts its rollout, which is promoted
        _approve(world, summary["ModelPackageArn"])
        daemon.jobs.packages.LAST_POLL.clear()  # the poll is due (30 s in the policy; not waited here)
        daemon.package_job(world.database.url, str(folder))
        [started] = _started(world)
        assert started["model"] == "churn:3" and started["version"] == 1
        assert world.tick_until(started["rollout"], ("promoted",)).state == "promoted"
        # 4. the package shows the outcome and the history's seq:hash
        daemon.package_job(world.database.url, str(folder))
        promoted = sm.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
        event = _outcome_event(world, started["rollout"])
        metadata = promoted["CustomerMetadataProperties"]
        assert metadata["variantctl-outcome"] == "promoted"
        assert metadata["variantctl-rollout"] == str(started["rollout"])
        assert metadata["variantctl-evidence"] == f"{event.seq}:{event.hash}"
        assert promoted["ModelLifeCycle"]["Stage"] == "Production"
        assert promoted["ModelLifeCycle"]["StageStatus"] == "Approved"
        assert promoted["ModelApprovalStatus"] == "Approved"

        # The same for a worse candidate, registered by a pipeline and approved: rolled back, rejected.
        flaky = flaky_artifact(tmp_path / "flaky.joblib", artifacts["logistic"], 0.5)
        worse = _package(world, flaky)
        _approve(world, worse)
        daemon.jobs.packages.LAST_POLL.clear()
        daemon.package_job(world.database.url, str(folder))
        second = _started(world)[1]
        assert second["version"] == 2 and second["model"] == "churn:4"
        assert world.tick_until(second["rollout"], ("rolled_back",), timeout=90).state == "rolled_back"
        daemon.package_job(world.database.url, str(folder))
        rejected = sm.describe_model_package(ModelPackageName=worse)
        event = _outcome_event(world, second["rollout"])
        assert rejected["CustomerMetadataProperties"]["variantctl-evidence"] == f"{event.seq}:{event.hash}"
        assert rejected["CustomerMetadataProperties"]["variantctl-outcome"] == "rolled_back"
        assert rejected["ModelLifeCycle"]["Stage"] == "Staging"
        assert rejected["ModelLifeCycle"]["StageStatus"] == "Rejected"
        assert rejected["ModelApprovalStatus"] == "Rejected"  # rejectOnRollback: true
        _finished_status_is_true(world, started["rollout"], second["rollout"])
        # lineage: the model names its package, and the write-back is shown done
        shown = CliRunner().invoke(cli, ["--db", world.db, "models", "show", "churn:4", "-o", "json"])
        record = json.loads(shown.stdout)
        assert record["model_package"].startswith("churn-models/2 (arn:aws:sagemaker:")
        assert "written" in record["package_writebacks"][0]
        del registry
        _lineage_everywhere(world, summary["ModelPackageArn"], started["rollout"])
    assert audit.verify(world.database).ok


def _finished_status_is_true(world: World, promoted: int, rolled_back: int) -> None:
    """Issue 31, item 5: a finished rollout's status said `next: analyse at 50%`, marked steps it never
    reached as done, and listed a promoted rollout at the weight of its last step."""
    runner = CliRunner()

    def status(rollout: int) -> dict[str, Any]:
        shown = runner.invoke(cli, ["--db", world.db, "rollout", "status", str(rollout), "-o", "json"])
        return dict(json.loads(shown.stdout))

    won, lost = status(promoted), status(rolled_back)
    assert (won["weight"], lost["weight"]) == (100.0, 0.0)
    assert won["next"] == "nothing: the rollout is promoted"
    assert [s["state"] for s in won["steps"]] == ["done", "done"]
    assert lost["next"] == "nothing: the rollout is rolled_back"
    assert [s["state"] for s in lost["steps"]] == ["done", "ended here (rolled_back)"]
    listed = json.loads(
        runner.invoke(cli, ["--db", world.db, "rollout", "list", "--all", "-o", "json"]).stdout
    )
    assert {r["rollout"]: r["weight"] for r in listed} == {promoted: 100.0, rolled_back: 0.0}


def _lineage_everywhere(world: World, arn: str, rollout: int) -> None:
    """`endpoints show --at`, `rollout report` and `audit export` name the package and its version."""
    runner = CliRunner()
    now = datetime.now(UTC).isoformat()
    shown = runner.invoke(cli, ["--db", world.db, "endpoints", "show", ENDPOINT, "--at", now])
    assert shown.exit_code == 0, shown.output
    assert f"model package churn-models/1 ({arn})" in shown.output
    report = runner.invoke(
        cli, ["--db", world.db, "rollout", "report", str(rollout), "--format", "json", "-o", "-"]
    )
    package = json.loads(report.stdout)["model_package"]
    assert package == {"arn": arn, "version": "churn-models/1", "writeback": "done"}
    exported = runner.invoke(cli, ["--db", world.db, "audit", "export"])
    actions = {json.loads(line)["action"] for line in exported.stdout.splitlines() if arn in line}
    assert {"model.package", "package.rollout", "package.updated"} <= actions


def test_approvals_while_a_rollout_runs_wait_and_the_newest_wins(
    tmp_path: Path, artifacts: dict[str, Path], db_url: str
) -> None:
    folder = _folder(tmp_path)
    with make_world(tmp_path, artifacts, url=db_url) as world, world.traffic(), jobs(world):
        arns = [_package(world, artifacts["logistic"]) for _ in range(4)]
        _approve(world, arns[0])
        daemon.package_job(world.database.url, str(folder))
        [first] = _started(world)
        for arn in arns[1:]:
            _approve(world, arn)
        daemon.jobs.packages.LAST_POLL.clear()
        daemon.package_job(world.database.url, str(folder))
        assert len(_started(world)) == 1, "the endpoint is busy: they wait their turn"
        world.tick_until(first["rollout"], ("promoted",))
        daemon.jobs.packages.LAST_POLL.clear()
        daemon.package_job(world.database.url, str(folder))
        assert [s["version"] for s in _started(world)] == [1, 4]
        with world.database.read() as session:
            claims = rows.claims(session, "approvals")
            skipped = {c.package_version: c.reason for c in claims.values() if c.state == "skipped"}
        assert set(skipped) == {2, 3}
        assert all("version 4 was approved too and is newer" in why for why in skipped.values())
        # once skipped, a version stays skipped: polls and repeated events change nothing
        for _ in range(3):
            daemon.jobs.packages.LAST_POLL.clear()
            daemon.package_job(world.database.url, str(folder))
        assert len(_started(world)) == 2
        # A renamed policy has taken nothing yet: the newest approved version already serves, so it is
        # recorded as skipped, not rolled out again.
        world.tick_until(_started(world)[1]["rollout"], ("promoted",))
        renamed = folder / "approvals.yaml"
        renamed.write_text(renamed.read_text().replace("name: approvals", "name: approvals-renamed"))
        daemon.jobs.packages.LAST_POLL.clear()
        daemon.package_job(world.database.url, str(folder))
        assert len(_started(world)) == 2
        with world.database.read() as session:
            [again] = [
                c for c in rows.claims(session, "approvals-renamed").values() if c.package_version == 4
            ]
        assert again.state == "skipped" and "already serves" in again.reason


def test_events_from_the_queue_start_the_rollout_without_waiting_for_a_poll(
    tmp_path: Path, artifacts: dict[str, Path], db_url: str
) -> None:
    with make_world(tmp_path, artifacts, url=db_url) as world, jobs(world):
        sqs = world.host.client("sqs")
        url = sqs.create_queue(QueueName="approvals")["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="not an event")  # counted, deleted, never fatal
        folder = _folder(tmp_path, queue=f", queueUrl: '{url}', pollSeconds: 3600")
        daemon.package_job(world.database.url, str(folder))  # the first look polls (nothing yet)
        arn = _package(world, artifacts["logistic"])
        _approve(world, arn)
        daemon.package_job(world.database.url, str(folder))  # the poll is an hour away: the event acts
        [started] = _started(world)
        assert started["package"] == arn
        assert sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages") is None
        assert daemon.jobs.packages.MALFORMED[url] == 1


def test_a_failed_write_back_is_kept_shown_and_retried(
    tmp_path: Path, artifacts: dict[str, Path], db_url: str
) -> None:
    folder = _folder(tmp_path)
    with make_world(tmp_path, artifacts, url=db_url) as world, world.traffic(), jobs(world) as registry:
        arn = _package(world, artifacts["logistic"], status="Approved")
        daemon.package_job(world.database.url, str(folder))
        [started] = _started(world)
        world.tick_until(started["rollout"], ("promoted",))

        def refused(_arn: str, _request: dict[str, Any]) -> None:
            raise RuntimeError(
                "AccessDeniedException: not authorized to perform sagemaker:UpdateModelPackage"
            )

        real = registry.update
        registry.update = refused  # type: ignore[method-assign]
        daemon.package_job(world.database.url, str(folder))
        with world.database.read() as session:
            row = rows.writeback(session, started["rollout"])
            assert row is not None and row.state == "pending" and row.attempts == 1
            assert "AccessDenied" in (row.last_error or "")
        shown = CliRunner().invoke(cli, ["--db", world.db, "models", "show", started["model"], "-o", "json"])
        assert "pending, 1 failed" in json.loads(shown.stdout)["package_writebacks"][0]
        status = CliRunner().invoke(cli, ["--db", world.db, "rollout", "status", str(started["rollout"])])
        assert "pending (1 failed attempts; last: RuntimeError: AccessDenied" in status.output
        registry.update = real  # type: ignore[method-assign]
        with world.database.write() as session:  # its retry is due (5 s later; not waited here)
            due = rows.writeback(session, started["rollout"])
            assert due is not None
            due.next_attempt_at = datetime.now(UTC)
        daemon.package_job(world.database.url, str(folder))
        described = world.host.client("sagemaker").describe_model_package(ModelPackageName=arn)
        assert described["CustomerMetadataProperties"]["variantctl-outcome"] == "promoted"
        [updated] = audit.history(world.database, audit.HistoryFilter(action="package.updated"))
        assert json.loads(updated.payload)["attempts"] == 2


def test_an_endpoint_serving_a_package_is_adopted_with_its_lineage(
    tmp_path: Path, artifacts: dict[str, Path], aws_env: Any, run: Any
) -> None:
    """A model created from a package (as SageMaker's MLOps templates deploy) is adopted as a version
    carrying the package's ARN; `models import` of the same package finds that version."""
    assert run("db", "upgrade").exit_code == 0
    sm = aws_env.client("sagemaker")
    sm.create_model_package_group(ModelPackageGroupName="pipeline-models")
    spec = {"Containers": [{"Image": "local/sklearn:1.9", "ModelDataUrl": artifacts["logistic"].as_uri()}]}
    arn = sm.create_model_package(
        ModelPackageGroupName="pipeline-models", InferenceSpecification=spec, ModelApprovalStatus="Approved"
    )["ModelPackageArn"]
    sm.create_model(
        ModelName="from-package",
        Containers=[{"ModelPackageName": arn}],
        ExecutionRoleArn="arn:aws:iam::123456789012:role/SageMakerRole",
    )
    variant = {"VariantName": "main", "ModelName": "from-package", "InitialInstanceCount": 1}
    sm.create_endpoint_config(
        EndpointConfigName="pkg-config", ProductionVariants=[{**variant, "InstanceType": "ml.m5.large"}]
    )
    sm.create_endpoint(EndpointName="pkg-prod", EndpointConfigName="pkg-config")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="pkg-prod", WaiterConfig={"Delay": 1})
    adopted = run("endpoints", "adopt", "pkg-prod")
    assert adopted.exit_code == 0, adopted.output
    shown = json.loads(run("models", "show", "from-package", "-o", "json").stdout)
    assert shown["model_package"] == f"pipeline-models/1 ({arn})"
    imported = run("models", "import", "--model-package-arn", arn, "--name", "other")
    assert imported.exit_code == 0 and "already imported as from-package:1" in imported.output
    missing = run("models", "import", "--model-package-arn", arn[:-1] + "9")
    assert missing.exit_code != 0 and "does not exist" in missing.output and "Traceback" not in missing.output


def test_a_bad_package_option_is_one_line_and_trains_nothing(run: Any, tmp_path: Path) -> None:
    assert run("db", "upgrade").exit_code == 0
    config = Path(__file__).resolve().parent.parent / "examples" / "training" / "breast-cancer.yaml"
    common = ("train", "--data", "sklearn:breast_cancer", "--config", str(config))
    bad_group = run(*common, "--model-package-group", "bad group!")
    assert bad_group.exit_code == 2 and "--model-package-group 'bad group!'" in bad_group.output
    alone = run(*common, "--package-approval", "auto")
    assert alone.exit_code == 2 and "needs --model-package-group" in alone.output
    assert json.loads(run("models", "list", "-o", "json").stdout) == []
    bad_policy = tmp_path / "p.yaml"
    bad_policy.write_text(POLICY.replace("QUEUE", "").replace("group: churn-models", "group: 'churn models'"))
    refused = run("policy", "validate", str(bad_policy))
    assert refused.exit_code != 0 and "group" in refused.output and "Traceback" not in refused.output


def test_a_version_on_s3_is_registered_with_its_model_quality_statistics(
    host: Any, database: Any, artifacts: dict[str, Path]
) -> None:
    from trainers.packages import register_package

    s3 = host.client("s3")
    s3.create_bucket(Bucket="models")
    s3.upload_file(str(artifacts["logistic"]), "models", "churn/run-1/model.joblib")
    with database.write() as session:
        spec = models.NewVersion(
            "churn",
            "s3://models/churn/run-1/model.joblib",
            "sklearn",
            metrics={"test": {"roc_auc": 0.93, "accuracy": 0.875}},
            status="approved",
        )
        models.register(session, spec, "t")
    registry = ModelRegistry(host.client("sagemaker"), host.client("sqs"), s3)
    arn, status = register_package(database, registry, "churn:1", "churn-models", "auto", "gate passed", "t")
    assert status == "Approved"
    described = host.client("sagemaker").describe_model_package(ModelPackageName=arn)
    statistics = described["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert statistics == {
        "ContentType": "application/json",
        "S3Uri": "s3://models/churn/run-1/evaluation.json",
    }
    body = json.loads(s3.get_object(Bucket="models", Key="churn/run-1/evaluation.json")["Body"].read())
    assert body == {
        "binary_classification_metrics": {"accuracy": {"value": 0.875}, "roc_auc": {"value": 0.93}}
    }
    assert described["CustomerMetadataProperties"]["metric-roc_auc"] == "0.93"
    assert described["CustomerMetadataProperties"]["variantctl-model"] == "churn:1"
    with database.read() as session:
        assert models.get(session, "churn:1").model_package_arn == arn


def test_an_unreadable_queue_is_said_once_and_polling_goes_on(
    tmp_path: Path, artifacts: dict[str, Path], db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with make_world(tmp_path, artifacts, url=db_url) as world, jobs(world):
        missing = world.host.url + "/123456789012/nowhere"
        folder = _folder(tmp_path, queue=f", queueUrl: '{missing}'")
        _approve(world, _package(world, artifacts["logistic"]))
        with caplog.at_level("WARNING", logger="variantctl.daemon"):
            for _ in range(3):
                daemon.package_job(world.database.url, str(folder))
        assert len(_started(world)) == 1, "the first look polls, whatever the queue"
        said = [r.getMessage() for r in caplog.records if "cannot read the queue" in r.getMessage()]
        assert len(said) == 1 and "NonExistentQueue" in said[0]
        daemon.jobs.packages.QUEUE_ERRORS.clear()
