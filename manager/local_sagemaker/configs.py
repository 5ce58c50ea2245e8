"""SageMaker endpoint configs: CreateEndpointConfig, DescribeEndpointConfig, DeleteEndpointConfig,
ListEndpointConfigs.

A config keeps every setting it was created with and describes it back: `KmsKeyId`, `VpcConfig`,
`EnableNetworkIsolation`, the capture's `KmsKeyId` and each variant's own settings change nothing
here (the host encrypts nothing and has no network to isolate). What would change how an endpoint
answers and cannot be honoured is refused with the reason: `AsyncInferenceConfig` (the host serves
InvokeEndpoint, not InvokeEndpointAsync) and `ExplainerConfig`.
"""

from __future__ import annotations

import math
import re
from typing import Any

from manager.local_sagemaker.book import Book, Shared, find
from manager.local_sagemaker.models import Models
from manager.local_sagemaker.protocol import check_bounds, check_instance_type, check_name, iso, validation
from manager.local_sagemaker.runtime import s3_problem

MAX_VARIANTS = 10
SERVERLESS_MEMORY = (1024, 2048, 3072, 4096, 5120, 6144)  # MB, as serverless endpoints offer
REFUSED = {
    "AsyncInferenceConfig": "the local SageMaker serves InvokeEndpoint only, not asynchronous inference",
    "ExplainerConfig": "the local SageMaker runs no SageMaker Clarify explainer",
}


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _bound(value: Any, field: str, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise validation(
            f"1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: "
            f"Member must have value between {low} and {high}"
        )


def check_serverless(config: dict[str, Any], where: str) -> None:
    memory = config.get("MemorySizeInMB")
    _bound(memory, f"{where}.serverlessConfig.memorySizeInMB", SERVERLESS_MEMORY[0], SERVERLESS_MEMORY[-1])
    if memory not in SERVERLESS_MEMORY:
        raise validation(
            f"MemorySizeInMB {memory} is not offered: choose one of {', '.join(map(str, SERVERLESS_MEMORY))}"
        )
    _bound(config.get("MaxConcurrency"), f"{where}.serverlessConfig.maxConcurrency", 1, 200)
    provisioned = config.get("ProvisionedConcurrency")
    if provisioned is not None:
        _bound(provisioned, f"{where}.serverlessConfig.provisionedConcurrency", 1, 200)
        if provisioned > config["MaxConcurrency"]:
            raise validation(
                f"ProvisionedConcurrency ({provisioned}) must not exceed MaxConcurrency "
                f"({config['MaxConcurrency']})"
            )


def check_capture(capture: dict[str, Any]) -> None:
    pct = capture.get("InitialSamplingPercentage")
    if not isinstance(pct, int) or not 0 <= pct <= 100:
        raise validation("DataCaptureConfig.InitialSamplingPercentage must be an integer 0-100")
    destination = str(capture.get("DestinationS3Uri", ""))
    if not re.match(r"^(s3|file)://", destination):
        raise validation("DataCaptureConfig.DestinationS3Uri must be an s3:// URI")
    if (problem := s3_problem(destination)) is not None:
        raise validation(f"DataCaptureConfig.DestinationS3Uri {destination!r}: {problem}")
    options = capture.get("CaptureOptions") or []
    if not 1 <= len(options) <= 2 or any(
        o.get("CaptureMode") not in ("Input", "Output", "InputAndOutput") for o in options
    ):
        raise validation("DataCaptureConfig.CaptureOptions must list 1-2 of Input, Output, InputAndOutput")


class Configs(Book[dict[str, Any]]):
    kind, noun = "endpoint-config", "endpoint configuration"
    field, plural = "EndpointConfig", "EndpointConfigs"

    def __init__(self, shared: Shared, models: Models) -> None:
        super().__init__(shared)
        self.models = models

    def op_CreateEndpointConfig(self, req: dict[str, Any]) -> dict[str, Any]:
        name = check_name("endpointConfigName", req.get("EndpointConfigName"))
        if find(self.table, name) is not None:
            raise validation(f'Cannot create already existing endpoint configuration "{self.arn(name)}".')
        for setting, reason in REFUSED.items():
            if req.get(setting):
                raise validation(f"{setting} is not supported: {reason}")
        production = req.get("ProductionVariants") or []
        shadows = req.get("ShadowProductionVariants") or []
        if req.get("ShadowProductionVariants") == []:  # botocore: min 1 when given
            raise validation(
                "1 validation error detected: Value '[]' at 'shadowProductionVariants' failed to satisfy "
                "constraint: Member must have length greater than or equal to 1"
            )
        if not 1 <= len(production) <= MAX_VARIANTS:
            raise validation(
                "1 validation error detected: Value at 'productionVariants' failed to "
                f"satisfy constraint: Member must have length between 1 and {MAX_VARIANTS}"
            )
        if shadows and (len(production) != 1 or len(shadows) != 1):
            # CreateEndpointConfig, ShadowProductionVariants: "If you use this field, you can only
            # specify one variant for ProductionVariants and one variant for ShadowProductionVariants."
            raise validation(
                "If you use ShadowProductionVariants, you can only specify one variant for "
                f"ProductionVariants and one variant for ShadowProductionVariants (got {len(production)} "
                f"and {len(shadows)})."
            )
        if shadows and any(v.get("ServerlessConfig") for v in [*production, *shadows]):
            # Developer guide, "Shadow tests: Exclusions": serverless inference cannot be shadow tested.
            raise validation("Shadow variants are not supported for serverless inference endpoints.")
        seen: set[str] = set()
        for member, specs in (("productionVariants", production), ("shadowProductionVariants", shadows)):
            for index, spec in enumerate(specs, start=1):
                self._check_variant(spec, f"{member}.{index}.member", seen)
        if sum(float(v.get("InitialVariantWeight", 1.0)) for v in production) <= 0:
            raise validation("The sum of the production variants' weights must be greater than 0")
        capture = req.get("DataCaptureConfig")
        if capture:
            check_capture(capture)
        self.shared.tags.add(self.arn(name), req.get("Tags") or [])
        self.table[name] = {
            **{k: v for k, v in req.items() if k != "Tags" and v is not None},
            "EndpointConfigName": name,
            "EndpointConfigArn": self.arn(name),
            "ProductionVariants": production,
            "ShadowProductionVariants": shadows,
            "DataCaptureConfig": capture,
            "CreationTime": self.shared.clock(),
        }
        self.shared.save()
        return {"EndpointConfigArn": self.arn(name)}

    def _check_variant(self, spec: dict[str, Any], where: str, seen: set[str]) -> None:
        variant = check_name("variantName", spec.get("VariantName"))
        if variant.lower() in seen:  # variant names, like every other name, are one name in any case
            raise validation(f"Variant name {variant} is not unique within the endpoint config")
        seen.add(variant.lower())
        self.models.get(spec.get("ModelName", ""))
        # VolumeSizeInGB, the timeouts, ...: botocore's bounds (the count is checked below)
        check_bounds("ProductionVariant", spec, where, skip=("InitialInstanceCount",))
        weight = spec.get("InitialVariantWeight", 1.0)
        if not finite(weight) or weight < 0:
            raise validation(f"InitialVariantWeight of {variant} must be a number >= 0")
        serverless = spec.get("ServerlessConfig")
        if serverless:
            if spec.get("InstanceType") or spec.get("InitialInstanceCount") is not None:
                raise validation(
                    f"Variant {variant} has a ServerlessConfig: "
                    "give it no InstanceType or InitialInstanceCount"
                )
            check_serverless(serverless, where)
            return
        if not spec.get("InstanceType"):
            raise validation(f"Variant {variant} needs an InstanceType or a ServerlessConfig")
        check_instance_type("ProductionVariantInstanceType", f"{where}.instanceType", spec["InstanceType"])
        count = spec.get("InitialInstanceCount")
        if not isinstance(count, int) or count < 1:
            raise validation(f"InitialInstanceCount of {variant} must be an integer >= 1")

    def op_DescribeEndpointConfig(self, req: dict[str, Any]) -> dict[str, Any]:
        config = self.get(req.get("EndpointConfigName", ""))
        out = {k: v for k, v in config.items() if v not in (None, [])}
        out["CreationTime"] = iso(config["CreationTime"])
        return out

    def op_DeleteEndpointConfig(self, req: dict[str, Any]) -> dict[str, Any]:
        # Like AWS, an endpoint config may be deleted while an endpoint uses it.
        return self.delete(req)

    def op_ListEndpointConfigs(self, req: dict[str, Any]) -> dict[str, Any]:
        return self.listing(req)
