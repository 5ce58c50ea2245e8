"""Shared pieces for tests that drive the local SageMaker through real boto3 clients."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import joblib
import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

T = TypeVar("T")
INSTANCE = "ml.m5.large"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


def train_artifacts(folder: Path) -> dict[str, Path]:
    """Two distinguishable binary classifiers and a regressor, saved with joblib."""
    folder.mkdir(parents=True, exist_ok=True)
    x, y = load_breast_cancer(return_X_y=True)
    xr, yr = load_diabetes(return_X_y=True)
    models = {
        "logistic": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y),
        "prior": DummyClassifier(strategy="prior").fit(x, y),
        "ridge": make_pipeline(StandardScaler(), Ridge()).fit(xr, yr),
    }
    paths = {}
    for name, model in models.items():
        paths[name] = folder / f"{name}.joblib"
        joblib.dump(model, paths[name])
    return paths


def flaky_artifact(path: Path, logistic: Path, failure_rate: float) -> Path:
    """The `logistic` model wrapped to fail a share of its calls with a 5xx (the demo's FlakyModel)."""
    from manager.demo.scenarios import FlakyModel

    joblib.dump(FlakyModel(joblib.load(logistic), failure_rate=failure_rate), path)
    return path


@functools.lru_cache(maxsize=1)
def first_row() -> str:
    x, _ = load_breast_cancer(return_X_y=True)
    return ",".join(repr(float(v)) for v in x[0])


def expected_scores(paths: dict[str, Path]) -> dict[str, float]:
    x, _ = load_breast_cancer(return_X_y=True)
    return {
        name: float(joblib.load(paths[name]).predict_proba(x[:1])[0, 1]) for name in ("logistic", "prior")
    }


def create_model(sm: Any, name: str, artifact: Path, environment: dict[str, str] | None = None) -> None:
    container: dict[str, Any] = {"Image": "local/sklearn:1.9", "ModelDataUrl": artifact.as_uri()}
    if environment:
        container["Environment"] = environment
    sm.create_model(ModelName=name, PrimaryContainer=container, ExecutionRoleArn=ROLE)


def variant(name: str, model: str, weight: float = 1.0, count: int = 1) -> dict[str, Any]:
    return {
        "VariantName": name,
        "ModelName": model,
        "InstanceType": INSTANCE,
        "InitialInstanceCount": count,
        "InitialVariantWeight": weight,
    }


def until(condition: Callable[[], T | None], what: str, timeout: float = 15) -> T:
    """Poll `condition` until it returns something truthy, and return that; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def wait_status(sm: Any, endpoint: str, wanted: str = "InService", timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        described: dict[str, Any] = sm.describe_endpoint(EndpointName=endpoint)
        if described["EndpointStatus"] == wanted:
            return described
        if time.monotonic() > deadline:
            raise AssertionError(f"{endpoint} stayed {described['EndpointStatus']}, wanted {wanted}")
        time.sleep(0.05)


def settle(host: Any, sm: Any, endpoint: str, wanted: str = "InService", seconds: float = 3600) -> Any:
    """With the host's clock held: move it past every timed step (`seconds`), then wait for what takes
    real work (loading the models) to finish, polling."""
    host.clock.advance(seconds)
    return wait_status(sm, endpoint, wanted)


def binomial_bounds(n: int, p: float, z: float = 3.29) -> tuple[float, float]:
    """A 99.9% normal-approximation interval for the share of n draws with probability p."""
    half = z * float(np.sqrt(p * (1 - p) / n))
    return p - half, p + half


def raw_sagemaker(url: str, operation: str, request: dict[str, Any]) -> dict[str, Any]:
    """A SageMaker JSON 1.1 call as sent on the wire, its answer unparsed: what boto3 would parse
    (boto3 itself silently drops members the service model does not know)."""
    import json
    import urllib.request

    sent = urllib.request.Request(
        url,
        data=json.dumps(request).encode(),
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": f"SageMaker.{operation}",
            "Authorization": "AWS4-HMAC-SHA256 Credential=local/20261206/us-east-1/sagemaker/aws4_request",
        },
        method="POST",
    )
    with urllib.request.urlopen(sent, timeout=30) as answer:
        out: dict[str, Any] = json.loads(answer.read())
    return out


def shape_problems(operation: str, response: dict[str, Any]) -> list[str]:
    """Where a raw SageMaker response breaks botocore's output shape for `operation`: a required member
    missing, or a member the shape does not have, at any depth."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    problems: list[str] = []

    def walk(shape: Any, value: Any, path: str) -> None:
        if shape.type_name == "structure" and isinstance(value, dict):
            problems.extend(
                f"{path}.{k}: missing" for k in shape.metadata.get("required", []) if k not in value
            )
            for key, item in value.items():
                if key not in shape.members:
                    problems.append(f"{path}.{key}: not in the shape")
                else:
                    walk(shape.members[key], item, f"{path}.{key}")
        elif shape.type_name == "list" and isinstance(value, list):
            for i, item in enumerate(value):
                walk(shape.member, item, f"{path}[{i}]")
        elif shape.type_name == "map" and isinstance(value, dict):
            for key, item in value.items():
                walk(shape.value, item, f"{path}[{key}]")

    walk(model.operation_model(operation).output_shape, response, operation)
    return problems
