"""SageMaker models: CreateModel, DescribeModel, DeleteModel, ListModels.

A model keeps every setting it was created with (`VpcConfig`, `EnableNetworkIsolation`,
`InferenceExecutionConfig`, ...) and describes it back; none changes how the host serves it, since
the host has no network to isolate. What would change serving and cannot be honoured here, an
inference pipeline of several containers, is refused.
"""

from __future__ import annotations

import re
from typing import Any

from manager.local_sagemaker.book import Book, find
from manager.local_sagemaker.protocol import check_name, iso, validation
from manager.local_sagemaker.runtime import s3_problem


def container(model: dict[str, Any]) -> dict[str, Any]:
    """The one container a model serves, whether given as PrimaryContainer or Containers."""
    found: dict[str, Any] = model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0]
    return found


ROLE_ARN = r"arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+"


class Models(Book[dict[str, Any]]):
    kind = noun = "model"
    field, plural = "Model", "Models"
    # Resolves a container's ModelPackageName to the package's container (set by the control plane).
    packages: Any = None

    def op_CreateModel(self, req: dict[str, Any]) -> dict[str, Any]:
        name = check_name("modelName", req.get("ModelName"))
        if find(self.table, name) is not None:
            raise validation(f'Cannot create already existing model "{self.arn(name)}".')
        containers = req.get("Containers") or []
        if req.get("PrimaryContainer") and containers:
            raise validation("Give either PrimaryContainer or Containers, not both")
        if len(containers) > 1:
            raise validation(
                f"Model {name} lists {len(containers)} containers: the local SageMaker serves one "
                "container per model and does not run inference pipelines"
            )
        served = req.get("PrimaryContainer") or (containers or [None])[0]
        if not served:
            raise validation("Either PrimaryContainer or Containers must be provided")
        if served.get("ModelPackageName"):
            served = self._from_package(served)
            req = {**req, **({"Containers": [served]} if containers else {"PrimaryContainer": served})}
        role = req.get("ExecutionRoleArn")
        if role is not None and not (
            20 <= len(str(role)) <= 2048 and re.fullmatch(ROLE_ARN, str(role))
        ):  # botocore's RoleArn
            raise validation(
                f"1 validation error detected: Value '{role}' at 'executionRoleArn' failed to satisfy "
                f"constraint: Member must satisfy regular expression pattern: {ROLE_ARN}"
            )
        image = served.get("Image")
        if image is not None and not re.fullmatch(r"\S{1,255}", str(image)):  # botocore's ContainerImage
            raise validation(
                f"1 validation error detected: Value '{image}' at 'primaryContainer.image' failed to satisfy "
                "constraint: Member must satisfy regular expression pattern: [\\S]+"
            )
        url = served.get("ModelDataUrl")
        if url is not None and not re.match(r"^(s3|file)://", str(url)):
            raise validation(f"ModelDataUrl {url!r} must be an s3:// or file:// URI")
        if url is not None and (problem := s3_problem(str(url))) is not None:
            raise validation(f"ModelDataUrl {url!r}: {problem}")
        self.shared.tags.add(self.arn(name), req.get("Tags") or [])
        self.table[name] = {
            **{k: v for k, v in req.items() if k != "Tags" and v is not None},
            "ModelName": name,
            "ModelArn": self.arn(name),
            "CreationTime": self.shared.clock(),
        }
        self.shared.save()
        return {"ModelArn": self.arn(name)}

    def _from_package(self, served: dict[str, Any]) -> dict[str, Any]:
        """A container named by `ModelPackageName` serves the package's image and artifact, as on AWS,
        and keeps the package's ARN for lineage."""
        package = self.packages.servable(served["ModelPackageName"])
        entry = self.packages.package(served["ModelPackageName"])
        taken = {
            k: package[k] for k in ("Image", "ModelDataUrl", "Environment") if package.get(k) is not None
        }
        return {**taken, **served, "ModelPackageName": entry["ModelPackageArn"]}

    def op_DescribeModel(self, req: dict[str, Any]) -> dict[str, Any]:
        model = self.get(req.get("ModelName", ""))
        return {**model, "CreationTime": iso(model["CreationTime"])}

    def op_DeleteModel(self, req: dict[str, Any]) -> dict[str, Any]:
        return self.delete(req)

    def op_ListModels(self, req: dict[str, Any]) -> dict[str, Any]:
        return self.listing(req)
