"""A metric of your own from CloudWatch (Flagger's custom metric queries): any namespace, metric and
dimensions, read per variant with GetMetricData, and judged by the same sequential rules as the
built-in measures. `{endpoint}` and `{variant}` in a dimension's value are filled in for each variant.

The bounds are CloudWatch's (API reference, `Metric` and `Dimension`): a namespace and a metric name
1-255 characters, the namespace not starting with a colon; at most 30 dimensions, each name 1-255 and
each value 1-1024 ASCII characters with something other than spaces, a name not starting with a colon.
The statistic is any CloudWatch statistic or extended statistic (`MetricStat.Stat`)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from manager.policy.specs import Spec

STATISTIC = re.compile(
    r"^(SampleCount|Average|Sum|Minimum|Maximum|IQM"
    r"|p\d{1,2}(\.\d{1,10})?|p100"
    r"|(tm|wm|tc|ts)\d{1,2}(\.\d{1,10})?|(TM|WM|TC|TS|PR)\(\s*[\d.%:\s]+\))$"
)
PLACEHOLDERS = re.compile(r"\{(\w*)\}")


def _ascii(text: str, what: str, longest: int) -> str:
    if not 1 <= len(text) <= longest or not text.isascii() or not text.strip():
        raise ValueError(f"{what} must be 1-{longest} ASCII characters, not only spaces: {text!r}")
    if any(ord(c) < 32 for c in text):
        raise ValueError(f"{what} holds a control character: {text!r}")
    return text


class Query(Spec):
    """The metric to read for each variant."""

    namespace: str = Field(min_length=1, max_length=255, pattern=r"^[^:].*$")
    metric: str = Field(min_length=1, max_length=255)
    stat: str = "Average"
    dimensions: dict[str, str] = Field(
        default_factory=lambda: {"EndpointName": "{endpoint}", "VariantName": "{variant}"}, max_length=30
    )

    @field_validator("stat")
    @classmethod
    def _statistic(cls, value: str) -> str:
        if not STATISTIC.match(value):
            raise ValueError(
                f"{value!r} is not a CloudWatch statistic: Average, Sum, Minimum, Maximum, SampleCount, "
                "or an extended one (p90, p99.9, tm90, ...)"
            )
        return value

    @field_validator("dimensions")
    @classmethod
    def _dimensions(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            _ascii(name, "a dimension's name", 255)
            if name.startswith(":"):
                raise ValueError(f"a dimension's name cannot start with a colon: {name!r}")
            _ascii(text, f"dimension {name}'s value", 1024)
            unknown = [p for p in PLACEHOLDERS.findall(text) if p not in ("endpoint", "variant")]
            if unknown:
                raise ValueError(
                    f"dimension {name}: only {{endpoint}} and {{variant}} are filled in, not {{{unknown[0]}}}"
                )
        return value

    @model_validator(mode="after")
    def _per_variant(self) -> Query:
        if not any("{variant}" in v for v in self.dimensions.values()):
            raise ValueError(
                "no dimension names the variant ({variant}): the two arms would read the same series"
            )
        return self

    def resolved(self, endpoint: str, variant: str) -> dict[str, str]:
        """The dimensions for one variant."""
        return {
            k: v.replace("{endpoint}", endpoint).replace("{variant}", variant)
            for k, v in self.dimensions.items()
        }
