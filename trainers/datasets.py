"""Training data: CSV with the target in the first column and no header (as SageMaker's built-in
algorithms expect), or a dataset bundled with scikit-learn; seeded splits; simulated drift."""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from manager.errors import UserError

Task = Literal["binary", "multiclass", "regression"]
BUNDLED = {
    "breast_cancer": "load_breast_cancer",
    "diabetes": "load_diabetes",
    "wine": "load_wine",
    "digits": "load_digits",
}
MIN_ROWS = 30


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray
    y: np.ndarray
    task: Task
    source: str
    fingerprint: str  # sha256 of the bytes used: the file, or the arrays after any shift
    shift: str | None = None

    @property
    def location(self) -> str:
        """Where the rows can be read again: the bundled name, or the CSV's absolute path."""
        return self.source if self.source.startswith("sklearn:") else str(Path(self.source).resolve())

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])

    @property
    def features(self) -> int:
        return int(self.x.shape[1])


@dataclass(frozen=True)
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def infer_task(y: np.ndarray) -> Task:
    values = np.unique(y)
    if len(values) == 2:
        return "binary"
    if len(values) <= 20 and np.all(np.equal(np.mod(values, 1), 0)):
        return "multiclass"
    return "regression"


def _fingerprint_arrays(x: np.ndarray, y: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(x, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(y, dtype=np.float64).tobytes())
    return digest.hexdigest()


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """(features, target, sha256 of the file) from a headerless CSV with the target first."""
    import pandas as pd

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"no data file at {path}") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    if not raw.strip():
        raise UserError(f"{path} is empty")
    try:
        frame = pd.read_csv(io.BytesIO(raw), header=None, skip_blank_lines=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a CSV file: {str(exc).splitlines()[0]}") from None
    _refuse_ragged(path, raw, frame.shape[1])
    if frame.shape[1] < 2:
        raise UserError(
            f"{path} has {frame.shape[1]} column; it needs the target first, then at least one feature"
        )
    columns = []
    for index in range(frame.shape[1]):
        raw_column = frame.iloc[:, index]
        numeric = pd.to_numeric(raw_column, errors="coerce")
        bad = raw_column[numeric.isna() & raw_column.notna()]
        if len(bad):
            what = "the target" if index == 0 else f"feature column {index}"
            line = int(bad.index[0]) + 1
            raise UserError(
                f"{path}: {what} (CSV column {index + 1}) is not numeric: {bad.iloc[0]!r} on line {line}"
            )
        columns.append(numeric.to_numpy(dtype=np.float64))
    y, x = columns[0], np.column_stack(columns[1:])
    return x, y, hashlib.sha256(raw).hexdigest()


def _refuse_ragged(path: Path, raw: bytes, width: int) -> None:
    """Every row has the same number of fields (pandas would pad a short row with NaN, silently)."""
    import csv

    reader = csv.reader(io.StringIO(raw.decode("utf-8", errors="replace")))
    for number, row in enumerate(reader, start=1):
        if row and len(row) != width:
            raise UserError(f"{path}: line {number} has {len(row)} fields, the others {width}")


def load(source: str, shift: str | None = None, seed: int = 0) -> Dataset:
    """`path/to/data.csv` or `sklearn:<breast_cancer|diabetes|wine|digits>`, optionally shifted."""
    if source.startswith("sklearn:"):
        name = source.split(":", 1)[1]
        if name not in BUNDLED:
            raise UserError(f"no bundled dataset {name!r}; choose one of {', '.join(BUNDLED)}")
        import sklearn.datasets

        x, y = getattr(sklearn.datasets, BUNDLED[name])(return_X_y=True)
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        fingerprint = _fingerprint_arrays(x, y)
    else:
        x, y, fingerprint = read_csv(Path(source))
    validate(x, y, source)
    if shift:
        x, y = apply_shift(x, y, shift, seed)
        fingerprint = _fingerprint_arrays(x, y)
    return Dataset(x, y, infer_task(y), source, fingerprint, shift)


def validate(x: np.ndarray, y: np.ndarray, source: str) -> None:
    if np.isnan(y).any():
        raise UserError(f"{source}: the target has {int(np.isnan(y).sum())} missing (NaN) values")
    if not np.isfinite(y).all():
        raise UserError(f"{source}: the target has infinite values")
    if len(y) < MIN_ROWS:
        raise UserError(f"{source}: {len(y)} rows is too few to split for training (at least {MIN_ROWS})")
    if np.unique(y).size < 2:
        raise UserError(f"{source}: the target is constant ({y[0]:g}); there is nothing to learn")
    if np.isinf(x).any():
        raise UserError(f"{source}: the features hold infinite values")


_SHIFT = re.compile(r"^(noise|resample|scale):(\d+(?:\.\d+)?)$")


def apply_shift(x: np.ndarray, y: np.ndarray, shift: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Simulated drift, so that "retrain on new data" trains on different data:
    - `noise:S` adds Gaussian noise of S standard deviations to every feature;
    - `resample:F` redraws the rows with replacement, favouring rows with high first features by F;
    - `scale:F` multiplies the features by (1 + F) (a unit or calibration change upstream).
    """
    match = _SHIFT.match(shift)
    if not match:
        raise UserError(f"invalid shift {shift!r}: use noise:SIGMA, resample:FRACTION or scale:FACTOR")
    kind, amount = match.group(1), float(match.group(2))
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return x + rng.normal(0.0, amount, x.shape) * np.nanstd(x, axis=0), y
    if kind == "scale":
        return x * (1.0 + amount), y
    score = (x[:, 0] - np.nanmean(x[:, 0])) / (np.nanstd(x[:, 0]) or 1.0)
    weights = np.exp(amount * score)
    rows = rng.choice(len(y), size=len(y), replace=True, p=weights / weights.sum())
    return x[rows], y[rows]


def split(data: Dataset, validation: float = 0.2, test: float = 0.2, seed: int = 42) -> Splits:
    """Deterministic train/validation/test split, stratified for classification."""
    from sklearn.model_selection import train_test_split

    if not (0 < validation < 1 and 0 < test < 1 and validation + test < 0.9):
        raise UserError("validation and test fractions must be in (0, 1) and leave at least 10% for training")
    stratify = data.y if data.task != "regression" else None
    x_rest, x_test, y_rest, y_test = train_test_split(
        data.x, data.y, test_size=test, random_state=seed, stratify=stratify
    )
    stratify_rest = y_rest if data.task != "regression" else None
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=validation / (1 - test), random_state=seed, stratify=stratify_rest
    )
    return Splits(x_train, y_train, x_val, y_val, x_test, y_test)


def to_csv_bytes(x: np.ndarray, y: np.ndarray) -> bytes:
    """Target first, no header: the layout SageMaker's built-in XGBoost reads."""
    out = io.StringIO()
    np.savetxt(out, np.column_stack([y, x]), delimiter=",", fmt="%.10g")
    return out.getvalue().encode()
