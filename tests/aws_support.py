"""Test-side helpers for boto3 clients: recording which operations the product calls, and the
one moto gap the adapter suite must fill (UpdateEndpoint), filled openly here and nowhere else."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

# Every (service, operation) the product's clients called during this test session; the IAM
# policy test checks each against docs/iam-policy.json.
CALLED: set[tuple[str, str]] = set()


def record_operations(client: Any, sink: list[str] | None = None) -> Any:
    """Note each operation `client` calls, in CALLED and, if given, in `sink` (in order)."""
    service = client.meta.service_model.service_name

    def note(model: Any, **_: Any) -> None:
        CALLED.add((service, model.name))
        if sink is not None:
            sink.append(model.name)

    client.meta.events.register("before-call.*.*", note)
    return client


@contextmanager
def moto_with_update_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto 5.2 has no UpdateEndpoint. This adds it to moto's SageMaker, with AWS's semantics:
    - the endpoint must be InService: while Updating (or Creating) it is a ValidationException
      ("Cannot update in-progress endpoint");
    - the config must exist;
    - the endpoint swaps to the new config's variants, whose weights and instance counts come
      from the new config unless RetainAllVariantProperties is set (then, for variants of the
      same name, from the endpoint as it stands);
    - like moto's other operations, the change is immediate: the endpoint stays InService, so
      the Updating phase and blue/green traffic shifting are not covered here (the local
      SageMaker covers them).
    """
    from moto.sagemaker.exceptions import ValidationError
    from moto.sagemaker.models import FakeEndpoint
    from moto.sagemaker.responses import SageMakerResponse

    def update_endpoint(self: Any) -> Any:
        from moto.core.responses import ActionResult

        backend = self.sagemaker_backend
        name, config_name = self._get_param("EndpointName"), self._get_param("EndpointConfigName")
        endpoint = backend.endpoints.get(name)
        if endpoint is None:
            arn = FakeEndpoint.arn_formatter(name, backend.account_id, backend.region_name)
            raise ValidationError(f'Could not find endpoint "{arn}".')
        if endpoint.endpoint_status != "InService":
            raise ValidationError(f'Cannot update in-progress endpoint "{endpoint.arn}".')
        config = backend.endpoint_configs.get(config_name)
        if config is None:
            raise ValidationError(f'Could not find endpoint configuration "{config_name}".')
        variants = endpoint._process_production_variants(config.production_variants)
        if self._get_param("RetainAllVariantProperties"):
            current = {v["VariantName"]: v for v in endpoint.production_variants}
            for v in variants:
                for key in ("CurrentWeight", "DesiredWeight", "CurrentInstanceCount", "DesiredInstanceCount"):
                    if v["VariantName"] in current and key in current[v["VariantName"]]:
                        v[key] = current[v["VariantName"]][key]
        endpoint.endpoint_config_name = config_name
        endpoint.production_variants = variants
        endpoint.failure_reason = None
        return ActionResult({"EndpointArn": endpoint.arn})

    monkeypatch.setattr(SageMakerResponse, "update_endpoint", update_endpoint, raising=False)
    yield
