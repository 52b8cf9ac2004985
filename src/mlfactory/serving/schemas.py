"""Request and response bodies of the HTTP API, as pydantic models (they make `/openapi.json`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FILES_FIELD = "files"


class HealthResponse(BaseModel):
    """`GET /health`: the process is up and the model is loaded."""

    status: Literal["ok"] = "ok"


class ModelInfo(BaseModel):
    """`GET /v1/model`: what the served bundle is (see `BundleMeta.summary`)."""

    # Later bundle formats may add keys to the summary; pass them through.
    model_config = ConfigDict(extra="allow")

    name: str
    version: str
    modality: str = Field(description="image, text or audio")
    labels: list[str] = Field(description="The classes, in the model's output order.")
    metrics: dict[str, Any] = Field(default_factory=dict, description="Test-set metrics.")
    created_at: str | None = None
    git_commit: str | None = None
    data_fingerprint: str | None = None
    mlflow_run_id: str | None = None


class ModelRef(BaseModel):
    """Which model answered."""

    name: str
    version: str


class PredictionOut(BaseModel):
    """The result for one input."""

    label: str = Field(description="The most probable label.")
    score: float = Field(description="Probability of `label`, in [0, 1].")
    probabilities: dict[str, float] = Field(description="Probability of every label; sums to 1.")


class PredictResponse(BaseModel):
    """`POST /v1/predict`: one prediction per input, in request order."""

    model: ModelRef
    predictions: list[PredictionOut]


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer: one sentence saying what is wrong."""

    detail: str = Field(
        examples=["file 0 ('cat.txt'): not an image: the file could not be identified as an image"]
    )


class TextsRequest(BaseModel):
    """`POST /v1/predict` body for text bundles: `texts` (a list) or `text` (one string)."""

    model_config = ConfigDict(extra="forbid")

    texts: list[str] | None = Field(default=None, description="Texts to classify, in order.")
    text: str | None = Field(default=None, description="A single text to classify.")

    @model_validator(mode="after")
    def _exactly_one(self) -> TextsRequest:
        if (self.texts is None) == (self.text is None):
            raise ValueError("send exactly one of 'texts' (a list of strings) or 'text'")
        return self

    def items(self) -> list[str]:
        """The texts, in order."""
        return self.texts if self.texts is not None else [self.text or ""]


MULTIPART_BODY: dict[str, Any] = {
    "type": "object",
    "required": [FILES_FIELD],
    "properties": {
        FILES_FIELD: {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "One or more files, classified in order. The content is sniffed; "
            "part content types and file name extensions are not trusted.",
        }
    },
}


def predict_request_body(modality: str) -> dict[str, Any]:
    """The OpenAPI `requestBody` of `POST /v1/predict` for a bundle of `modality`."""
    if modality == "text":
        content = {"application/json": {"schema": TextsRequest.model_json_schema()}}
    else:
        content = {"multipart/form-data": {"schema": MULTIPART_BODY}}
    return {"required": True, "content": content}
