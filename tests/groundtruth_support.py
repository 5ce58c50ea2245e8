"""Model Monitor's JSON Lines records, as SageMaker's data capture and a labelling job write them."""

from __future__ import annotations

import json
from datetime import datetime


def capture_line(
    inference_id: str, at: datetime, output: str, use_event_id: bool = False, request: str = "1,2,3"
) -> str:
    """A Model Monitor capture record: the request (CSV) and the model's output."""
    meta = {
        "eventId": inference_id if use_event_id else f"evt-{inference_id}",
        "inferenceTime": at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
    }
    if not use_event_id:
        meta["inferenceId"] = inference_id
    return json.dumps(
        {
            "captureData": {
                "endpointInput": {
                    "observedContentType": "text/csv",
                    "mode": "INPUT",
                    "data": request,
                    "encoding": "CSV",
                },
                "endpointOutput": {
                    "observedContentType": "text/csv; charset=utf-8",
                    "mode": "OUTPUT",
                    "data": output,
                    "encoding": "CSV",
                },
            },
            "eventMetadata": meta,
            "eventVersion": "0",
        }
    )


def label_line(inference_id: str, label: str) -> str:
    """A Model Monitor ground-truth record labelling one inference."""
    return json.dumps(
        {
            "groundTruthData": {"data": label, "encoding": "CSV"},
            "eventMetadata": {"eventId": inference_id},
            "eventVersion": "0",
        }
    )
