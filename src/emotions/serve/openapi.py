"""The OpenAPI document the service publishes (``GET /docs.json``, the Swagger page).

BentoML's own document types ``/predict``'s answer as an untyped object and lists only 400,
404 and 500, under BentoML's boilerplate title. This module completes it from the contract
the service really keeps: the answer's schema (:class:`Prediction`, `emotions predict`'s JSON),
every status the gate, the connection guard and the handler return, each with the project's
error shape, and a title and description. The gate serves the completed document.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

TITLE = "emotions: emotion analysis of short videos"
DESCRIPTION = (
    "Upload one short video (multipart/form-data, file field `video`) to `POST /predict` and "
    "get its emotion, polarity, class probabilities, a per-window timeline and how much sound "
    "and picture each weighed: the JSON `emotions predict` prints. `GET /model` describes the "
    'served model. Every refusal is `{"error": code, "detail": text}` with the status '
    "listed under each route; a 503 carries `Retry-After`."
)


class Window(BaseModel):
    start_s: float
    end_s: float
    video_s: list[float] = Field(description="[start, end] of the picture window, seconds")
    audio_s: list[float] = Field(description="[start, end] of the sound window, seconds")
    label: str
    probabilities: dict[str, float]


class Prediction(BaseModel):
    """One clip's answer."""

    path: str = Field(description="the uploaded file's name, sanitised")
    label: str
    polarity: str
    probabilities: dict[str, float]
    timeline: list[Window]
    modality_share: dict[str, float] = Field(description="audio and visual, summing to 1")


class Error(BaseModel):
    """Every refusal."""

    error: str = Field(description="a stable code for programs")
    detail: str = Field(description="the sentence a person reads")


PREDICT_STATUSES = {
    400: "not one multipart file field `video` (missing_video), or an unreadable form "
    "(malformed_request)",
    405: "a method other than POST",
    408: "the body did not arrive within serve.body_timeout_s, or the head within "
    "serve.header_timeout_s (request_timeout)",
    413: "the body exceeds serve.max_upload_mb (payload_too_large)",
    415: "not a video: another file type, a still or animated image, sound only "
    "(unsupported_media_type)",
    422: "a video outside ingest's bounds (clip_out_of_bounds) or one that does not decode "
    "(undecodable_video)",
    431: "request headers over serve.max_header_kb or serve.max_headers (headers_too_large)",
    500: "the prediction failed (internal_error)",
    503: "serve.max_concurrency requests already being processed (overloaded); see Retry-After",
    504: "not answered within serve.timeout_s (timeout)",
}
OTHER_STATUSES = {
    404: "no such route (not_found)",
    431: PREDICT_STATUSES[431],
    503: PREDICT_STATUSES[503],
}


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def complete(spec: dict[str, Any], predict_path: str = "/predict") -> dict[str, Any]:
    """BentoML's document with the service's title, answer schema and statuses."""
    spec = copy.deepcopy(spec)
    info = spec.setdefault("info", {})
    # BentoML's Swagger page hides info.title (its stylesheet), so the title also heads the
    # description, which the page shows.
    info.update(title=TITLE, description=f"# {TITLE}\n\n{DESCRIPTION}", version=_version())
    info.pop("contact", None)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    prediction = Prediction.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(prediction.pop("$defs", {}))
    schemas["Prediction"] = prediction
    schemas["Error"] = Error.model_json_schema()
    for path, item in spec.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            statuses = PREDICT_STATUSES if path == predict_path else OTHER_STATUSES
            # BentoML's own error schemas go: its errors leave in the project's shape.
            responses = {str(k): v for k, v in operation["responses"].items() if int(k) < 400}
            responses.update({str(k): _error_response(text) for k, text in statuses.items()})
            operation["responses"] = responses
            if path == predict_path and method == "post":
                responses["200"] = {
                    "description": "the clip's prediction",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Prediction"}}
                    },
                }
                responses["503"]["headers"] = {
                    "Retry-After": {
                        "description": "seconds to wait before retrying",
                        "schema": {"type": "integer"},
                    }
                }
    return spec


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("emotions")
    except PackageNotFoundError:
        return "dev"


def completed(source: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """A cached :func:`complete` of ``source()`` (the document does not change while serving)."""
    cache: list[dict[str, Any]] = []

    def document() -> dict[str, Any]:
        if not cache:
            cache.append(complete(source()))
        return cache[0]

    return document
