"""Serving: load a scikit-learn artifact, parse a payload, predict, format the answer.

Artifacts are joblib files (or a model.tar.gz holding one), found through
`file://` paths or `s3://bucket/key` URIs mapped onto a local directory. For
binary classification the answer is the positive-class probability, as the
built-in XGBoost container gives it; regression returns the value.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
FAULT_5XX_RATE = "LOCAL_SAGEMAKER_FAULT_5XX_RATE"
EXTRA_LATENCY_MS = "LOCAL_SAGEMAKER_EXTRA_LATENCY_MS"
# A share of the requests routed to this variant by weight go to another production variant instead,
# as a misconfigured router or a client that retries elsewhere would: a sample ratio mismatch.
ROUTE_AWAY_RATE = "LOCAL_SAGEMAKER_FAULT_ROUTE_AWAY_RATE"


class ArtifactError(Exception):
    """The model artifact cannot be found or loaded."""


class PayloadError(Exception):
    """The request body is not something the model can score (a 4xx from the container)."""


BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def s3_problem(uri: str) -> str | None:
    """Why an s3:// URI cannot name an object under the host's S3 directory, or None. Bucket names
    follow S3's rules; `.` and `..` segments (also percent-encoded) are refused, so no key can leave
    the state directory."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3":
        return None
    if not BUCKET.match(parsed.netloc) or ".." in parsed.netloc:
        return f"{parsed.netloc!r} is not a valid bucket name"
    key = unquote(parsed.path)
    if any(segment in (".", "..") for segment in key.split("/")) or "\x00" in key:
        return "a key may not contain '.' or '..' segments"
    return None


def resolve_uri(uri: str, s3_root: Path) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "s3":
        problem = s3_problem(uri)
        if problem is not None:
            raise ArtifactError(f"{uri}: {problem}")
        root = s3_root.resolve()
        path = (root / parsed.netloc / unquote(parsed.path).lstrip("/")).resolve()
        if path != root and root not in path.parents:
            raise ArtifactError(f"{uri} resolves outside the local S3 directory")
        return path
    if parsed.scheme == "":
        return Path(uri)
    raise ArtifactError(f"unsupported URI scheme in {uri!r}: use s3:// or file://")


def _load_xgboost(name: str, path: Path, cache: Path, fault: Fault) -> LoadedModel:
    from manager.local_sagemaker import xgboost_algorithm

    if path.name.endswith((".tar.gz", ".tgz")):
        path = _extract(path, cache) / xgboost_algorithm.MODEL_FILE
        if not path.is_file():
            raise ArtifactError(f"the archive holds no {xgboost_algorithm.MODEL_FILE} file")
    try:
        model = xgboost_algorithm.load(path)
    except ImportError:
        raise ArtifactError(
            "serving an XGBoost model needs xgboost: pip install 'variantctl[sagemaker]'"
        ) from None
    except Exception as exc:  # any unreadable model is a failed load, reported to the caller
        raise ArtifactError(f"cannot load {path.name} with xgboost: {type(exc).__name__}: {exc}") from None
    binary = model.objective_name.startswith("binary:")
    return LoadedModel(
        name=name,
        estimator=model,
        n_features=model.n_features,
        binary=binary,
        classifier=binary or model.objective_name.startswith("multi:"),
        sklearn_version=None,
        fault=fault,
        container="xgboost",
    )


def _extract(path: Path, cache: Path) -> Path:
    digest = hashlib.sha256(f"{path}:{path.stat().st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache / digest
    if not target.exists():
        staging = cache / f".{digest}.partial"
        staging.mkdir(parents=True, exist_ok=True)
        with tarfile.open(path) as archive:
            archive.extractall(staging, filter="data")
        staging.rename(target)
    return target


def _from_tarball(path: Path, cache: Path) -> Path:
    target = _extract(path, cache)
    found = sorted(target.rglob("*.joblib")) + sorted(target.rglob("*.pkl"))
    if not found:
        raise ArtifactError(f"{path.name} holds no .joblib or .pkl model")
    return found[0]


@dataclass(frozen=True)
class Fault:
    """Failure injected through the model's Environment, to rehearse a bad deploy."""

    rate_5xx: float = 0.0
    extra_latency_ms: float = 0.0
    route_away: float = 0.0

    @classmethod
    def from_environment(cls, env: dict[str, str]) -> Fault:
        try:
            rate = float(env.get(FAULT_5XX_RATE, 0))
            latency = float(env.get(EXTRA_LATENCY_MS, 0))
            away = float(env.get(ROUTE_AWAY_RATE, 0))
        except ValueError as exc:
            raise ArtifactError(f"bad fault setting in Environment: {exc}") from None
        if not 0 <= rate <= 1 or latency < 0 or not 0 <= away <= 1:
            raise ArtifactError(
                f"{FAULT_5XX_RATE} and {ROUTE_AWAY_RATE} must be in [0, 1] and {EXTRA_LATENCY_MS} >= 0"
            )
        return cls(rate, latency, away)


@dataclass
class LoadedModel:
    name: str
    estimator: Any
    n_features: int | None
    binary: bool
    classifier: bool
    sklearn_version: str | None
    fault: Fault
    container: str = "sklearn"  # or "xgboost": answers as that container does

    def predict(self, rows: np.ndarray) -> list[Any]:
        if self.n_features is not None and rows.shape[1] != self.n_features:
            raise PayloadError(f"expected {self.n_features} features per row, got {rows.shape[1]}")
        if self.container == "xgboost":
            return list(self.estimator.predict(rows))
        if self.classifier:
            proba = self.estimator.predict_proba(rows)
            if self.binary:
                return [float(p) for p in proba[:, 1]]
            return [[float(p) for p in row] for row in proba]
        return [float(v) for v in np.ravel(self.estimator.predict(rows))]


def load_model(
    name: str,
    model_data_url: str,
    environment: dict[str, str],
    s3_root: Path,
    cache: Path,
    image: str | None = None,
) -> LoadedModel:
    """The model as its container would serve it: the built-in XGBoost algorithm's `xgboost-model`
    for an XGBoost image, a scikit-learn joblib artifact for any other image."""
    import joblib

    from manager.local_sagemaker import xgboost_algorithm

    path = resolve_uri(model_data_url, s3_root)
    if not path.is_file():
        raise ArtifactError(f"model artifact {model_data_url} not found (looked at {path})")
    fault = Fault.from_environment(environment)
    if xgboost_algorithm.is_xgboost_image(image):
        return _load_xgboost(name, path, cache, fault)
    if path.name.endswith((".tar.gz", ".tgz")):
        path = _from_tarball(path, cache)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            estimator = joblib.load(path)
        except Exception as exc:  # any unpickling failure is a failed load, reported to the caller
            raise ArtifactError(f"cannot load {path.name}: {type(exc).__name__}: {exc}") from None
    if not hasattr(estimator, "predict"):
        raise ArtifactError(f"{path.name} holds a {type(estimator).__name__}, not an estimator")
    classes = getattr(estimator, "classes_", None)
    classifier = classes is not None and hasattr(estimator, "predict_proba")
    saved_version = next(
        (
            str(w.message.original_sklearn_version)  # type: ignore[union-attr]
            for w in caught
            if type(w.message).__name__ == "InconsistentVersionWarning"
        ),
        None,
    )
    import sklearn

    return LoadedModel(
        name=name,
        estimator=estimator,
        n_features=getattr(estimator, "n_features_in_", None),
        binary=classifier and classes is not None and len(classes) == 2,
        classifier=classifier,
        sklearn_version=saved_version or sklearn.__version__,
        fault=fault,
    )


def parse_rows(body: bytes, content_type: str) -> np.ndarray:
    """CSV (one row per line, no header) or JSON (`{"instances": [[...]]}`, `[[...]]` or `[...]`)."""
    if not body.strip():
        raise PayloadError("empty request body")
    kind = content_type.split(";", 1)[0].strip().lower()
    try:
        if kind in ("text/csv", "text/plain", ""):
            text = body.decode()
            rows = np.array(
                [[float(v) for v in line.split(",")] for line in text.splitlines() if line.strip()],
                dtype=np.float64,
            )
        elif kind == "application/json":
            data = json.loads(body)
            if isinstance(data, dict):
                data = data.get("instances", data.get("inputs"))
            if isinstance(data, list) and data and not isinstance(data[0], list):
                data = [data]
            rows = np.array(data, dtype=np.float64)
        else:
            raise PayloadError(f"unsupported content type {content_type!r}: use text/csv or application/json")
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise PayloadError(f"cannot parse {kind or 'text/csv'} payload: {exc}") from None
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise PayloadError("payload must hold one or more rows of numbers of equal length")
    if not np.isfinite(rows).all():
        raise PayloadError("payload holds NaN or infinite values")
    return rows


def format_predictions(
    predictions: list[Any],
    accept: str | None,
    content_type: str,
    container: str = "sklearn",
    batch: bool = False,
) -> tuple[bytes, str]:
    """The answer's body and type. The XGBoost container joins CSV answers with commas on an
    endpoint, and puts one per line in a batch transform (its `SAGEMAKER_BATCH` mode)."""
    wanted = (accept or content_type or "text/csv").split(",")[0].split(";")[0].strip().lower()
    if wanted == "application/json":
        return json.dumps({"predictions": [{"score": p} for p in predictions]}).encode(), "application/json"
    if container == "xgboost" and not batch and predictions and not isinstance(predictions[0], list):
        return ",".join(repr(p) for p in predictions).encode(), "text/csv; charset=utf-8"
    out = io.StringIO()
    for p in predictions:
        out.write(",".join(repr(v) for v in p) if isinstance(p, list) else repr(p))
        out.write("\n")
    return out.getvalue().encode(), "text/csv; charset=utf-8"
