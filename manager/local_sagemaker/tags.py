"""Tags on SageMaker resources (`AddTags`, `ListTags`, `DeleteTags`, and `Tags` on every Create*).

Kept by ARN; a resource's tags go when it is deleted. AWS's limits: at most 50 tags, keys of
1-128 characters not starting with `aws:`, values of at most 256 characters.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from manager.local_sagemaker.protocol import validation

MAX_TAGS = 50
ARN = re.compile(r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:([a-z-]+)/(.+)$")


class TagBook:
    def __init__(self, exists: Callable[[str, str], bool]) -> None:
        self.exists = exists
        self.tags: dict[str, dict[str, str]] = {}

    def _resource(self, arn: Any) -> str:
        found = ARN.match(str(arn or ""))
        if not found or not self.exists(found.group(1), found.group(2)):
            raise validation(f"Resource {arn} does not exist or is not taggable")
        return str(arn)

    def add(self, arn: str, tags: Any) -> None:
        if not isinstance(tags, list):
            raise validation("Tags must be a list of {Key, Value}")
        current = dict(self.tags.get(arn, {}))
        for tag in tags:
            key, value = tag.get("Key"), tag.get("Value", "")
            if not isinstance(key, str) or not 1 <= len(key) <= 128:
                raise validation(
                    f"1 validation error detected: Value '{key}' at 'tags.member.key' failed to satisfy "
                    "constraint: Member must have length between 1 and 128"
                )
            if key.lower().startswith("aws:"):
                raise validation(f"Tag keys starting with 'aws:' are reserved for system use: {key}")
            if not isinstance(value, str) or len(value) > 256:
                raise validation(
                    "1 validation error detected: Value at 'tags.member.value' failed to satisfy "
                    f"constraint: Member must have length less than or equal to 256 ({key})"
                )
            current[key] = value
        if len(current) > MAX_TAGS:
            raise validation(
                f"A resource can have at most {MAX_TAGS} tags; this request would give it {len(current)}"
            )
        self.tags[arn] = current

    def forget(self, arn: str) -> None:
        self.tags.pop(arn, None)

    def op_AddTags(self, req: dict[str, Any]) -> dict[str, Any]:
        arn = self._resource(req.get("ResourceArn"))
        self.add(arn, req.get("Tags") or [])
        return {"Tags": [{"Key": k, "Value": v} for k, v in self.tags[arn].items()]}

    def op_ListTags(self, req: dict[str, Any]) -> dict[str, Any]:
        arn = self._resource(req.get("ResourceArn"))
        rows = [{"Key": k, "Value": v} for k, v in self.tags.get(arn, {}).items()]
        max_results = req.get("MaxResults") or 50
        if not isinstance(max_results, int) or not 50 <= max_results <= 100:
            raise validation(
                f"1 validation error detected: Value '{max_results}' at 'maxResults' failed to satisfy "
                "constraint: Member must have value between 50 and 100"
            )
        start = int(req.get("NextToken") or 0)
        out: dict[str, Any] = {"Tags": rows[start : start + max_results]}
        if start + max_results < len(rows):
            out["NextToken"] = str(start + max_results)
        return out

    def op_DeleteTags(self, req: dict[str, Any]) -> dict[str, Any]:
        arn = self._resource(req.get("ResourceArn"))
        for key in req.get("TagKeys") or []:
            self.tags.get(arn, {}).pop(key, None)
        return {}
