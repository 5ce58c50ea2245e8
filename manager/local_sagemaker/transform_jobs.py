"""Batch transform jobs: each input object scored with the model's container emulation."""

from __future__ import annotations

from typing import Any

from manager.local_sagemaker.book import find
from manager.local_sagemaker.job_runner import (
    TRANSFORM_LOGS,
    JobInputError,
    JobRunner,
    checked_s3_uri,
)
from manager.local_sagemaker.models import container
from manager.local_sagemaker.protocol import (
    AwsError,
    check_instance_type,
    check_name,
    validation,
    wire_times,
)
from manager.local_sagemaker.runtime import ArtifactError, resolve_uri


class TransformJobs(JobRunner):
    """Batch transform jobs: each input object scored by the model's container emulation."""

    def op_CreateTransformJob(self, req: dict[str, Any]) -> dict[str, Any]:
        name = check_name("transformJobName", req.get("TransformJobName"))
        if find(self.transform, name):
            raise AwsError(
                "ResourceInUse",
                "Job name must be unique within an AWS account and region, and a job with this name "
                f"already exists ({self.arn('transform-job', name)})",
            )
        model_name = str(req.get("ModelName", ""))
        model = self.model_lookup(model_name)
        source = ((req.get("TransformInput") or {}).get("DataSource") or {}).get("S3DataSource") or {}
        checked_s3_uri("TransformInput.DataSource.S3DataSource.S3Uri", source.get("S3Uri"))
        if source.get("S3DataType", "S3Prefix") != "S3Prefix":
            raise validation("the local SageMaker reads S3DataType S3Prefix only")
        transform_input = req["TransformInput"]
        split = transform_input.get("SplitType", "None")
        if split not in ("None", "Line"):
            raise validation(
                f"SplitType {split!r}: the local SageMaker splits by Line or not at all (RecordIO and "
                "TFRecord are not supported)"
            )
        if transform_input.get("CompressionType", "None") != "None":
            raise validation("the local SageMaker reads uncompressed transform input only")
        output = req.get("TransformOutput") or {}
        checked_s3_uri("TransformOutput.S3OutputPath", output.get("S3OutputPath"))
        assemble = output.get("AssembleWith", "None")
        if assemble not in ("None", "Line"):
            raise validation(f"AssembleWith {assemble!r} must be one of [None, Line]")
        strategy = req.get("BatchStrategy", "MultiRecord" if split == "Line" else "SingleRecord")
        if strategy not in ("MultiRecord", "SingleRecord"):
            raise validation(f"BatchStrategy {strategy!r} must be one of [MultiRecord, SingleRecord]")
        max_payload = int(req.get("MaxPayloadInMB", 6))
        if not 0 <= max_payload <= 100:
            raise validation("MaxPayloadInMB must be between 0 and 100")
        processing = req.get("DataProcessing") or {}
        if (
            processing.get("InputFilter", "$") != "$"
            or processing.get("OutputFilter", "$") != "$"
            or processing.get("JoinSource", "None") != "None"
        ):
            raise validation(
                "DataProcessing (input/output filters, JoinSource) is not supported by the local SageMaker"
            )
        resources = req.get("TransformResources") or {}
        check_instance_type(
            "TransformInstanceType", "transformResources.instanceType", resources.get("InstanceType")
        )
        now = self.clock()
        arn = self.arn("transform-job", name)
        job = {
            "TransformJobName": name,
            "TransformJobArn": arn,
            "TransformJobStatus": "InProgress",
            "ModelName": model_name,
            "MaxConcurrentTransforms": int(req.get("MaxConcurrentTransforms", 1)),
            "MaxPayloadInMB": max_payload,
            "BatchStrategy": strategy,
            "Environment": req.get("Environment") or {},
            "TransformInput": {"SplitType": split, "CompressionType": "None", **transform_input},
            "TransformOutput": {"AssembleWith": assemble, **output},
            "TransformResources": resources,
            "CreationTime": now,
            "LastModifiedTime": now,
        }
        if processing:
            job["DataProcessing"] = processing
        if req.get("Tags"):  # refused before the job exists, or kept with it
            self.tag(arn, req["Tags"])
        with self.lock:
            self.transform[name] = job
        self.save()
        self._thread(lambda: self._transform(name, model), "transform", job)
        return {"TransformJobArn": arn}

    def _transform(self, name: str, model: dict[str, Any]) -> None:
        job = self.transform[name]
        stream = (TRANSFORM_LOGS, f"{name}/i-{abs(hash(name)) % 16**8:08x}-{int(job['CreationTime'])}")
        served = container(model)
        try:
            uri = job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
            files = self._s3_files(uri)
            base = resolve_uri(uri, self.s3_root)
            root = base if base.is_dir() else base.parent
            out_root = resolve_uri(job["TransformOutput"]["S3OutputPath"].rstrip("/") + "/", self.s3_root)
            pairs = [(str(f), str(out_root / f"{f.relative_to(root)}.out")) for f in files]
            with self.lock:
                job["TransformStartTime"] = self.clock()
            spec = {
                "model_name": model["ModelName"],
                "model_data_url": served.get("ModelDataUrl"),
                "image": served.get("Image"),
                "environment": {**(served.get("Environment") or {}), **job["Environment"]},
                "s3_root": str(self.s3_root),
                "cache": str(self.state_dir / "artifacts"),
                "content_type": job["TransformInput"].get("ContentType", "text/csv"),
                "accept": job["TransformOutput"].get("Accept"),
                "split_type": job["TransformInput"]["SplitType"],
                "assemble_with": job["TransformOutput"]["AssembleWith"],
                "batch_strategy": job["BatchStrategy"],
                "max_payload_mb": job["MaxPayloadInMB"] or 100,
                "files": pairs,
            }
            if not spec["model_data_url"]:
                raise JobInputError(f"ClientError: model {model['ModelName']} has no ModelDataUrl")
            outcome = self._run("transform", name, spec, stream, lambda *_: None, None)
        except (JobInputError, ArtifactError, AwsError) as exc:
            outcome = ("failed", str(exc) if isinstance(exc, JobInputError) else f"ClientError: {exc}")
            self.logs.write(*stream, [outcome[1]])
        now = self.clock()
        with self.lock:
            job.setdefault("TransformStartTime", now)
            job["TransformEndTime"] = now
            job["LastModifiedTime"] = now
            if outcome[0] == "done":
                job["TransformJobStatus"] = "Completed"
            elif outcome[0] == "stopped":
                job["TransformJobStatus"] = "Stopped"
                self.stopping.discard(name)
            else:
                job["TransformJobStatus"] = "Failed"
                job["FailureReason"] = outcome[1]
        self.save()

    def _transform_job(self, name: Any) -> dict[str, Any]:
        job = find(self.transform, name)
        if job is None:
            raise validation(f"Could not find requested job with name {name}")
        return job

    def op_DescribeTransformJob(self, req: dict[str, Any]) -> dict[str, Any]:
        job = self._transform_job(req.get("TransformJobName"))
        out = self._described(job, "LastModifiedTime")  # kept for ListTransformJobs; not in Describe's shape
        result: dict[str, Any] = wire_times(out)
        return result

    def op_StopTransformJob(self, req: dict[str, Any]) -> dict[str, Any]:
        job = self._transform_job(req.get("TransformJobName"))
        self._ask_to_stop(job, "transform")  # a job not running: nothing to do, and no error (as on AWS)
        return {}

    def op_ListTransformJobs(self, req: dict[str, Any]) -> dict[str, Any]:
        keys = ("TransformJobName", "TransformJobArn", "CreationTime", "TransformEndTime", "LastModifiedTime",
                "TransformJobStatus", "FailureReason")  # fmt: skip
        return self._listing(req, "transform", lambda j: {k: j.get(k) for k in keys})
