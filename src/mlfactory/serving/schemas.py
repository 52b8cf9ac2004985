"""Request and response bodies of the HTTP API, as pydantic models (they make `/openapi.json`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlfactory.bundle import MAX_LABEL_CHARS
from mlfactory.modalities import ApiInput
from mlfactory.modalities.text import INVISIBLE_CLASS
from mlfactory.serving.request_ids import RequestId

FILES_FIELD = "files"
# "Has a character outside the invisible ones" (spaces, controls, zero-width and format
# characters), listed: regex engines disagree on what `\s` covers, so every schema validator
# reads it alike. The text decoder refuses a text without such a character.
NOT_BLANK_PATTERN = f"[^{INVISIBLE_CLASS}]"


class HealthResponse(BaseModel):
    """`GET /health`: the process is up and the model is loaded."""

    status: Literal["ok"] = "ok"


class InputLimits(BaseModel):
    """What one `POST /v1/predict` may hold: the server's settings (`MLFACTORY_MAX_*`), for
    clients that check before they send (the web UI does)."""

    max_upload_bytes: int = Field(description="Largest file, in bytes.")
    max_files: int = Field(description="Most files, or texts, in one request.")
    max_text_chars: int = Field(description="Longest text, in characters.")
    max_request_bytes: int = Field(description="Largest request body, in bytes.")


class ModelInfo(BaseModel):
    """`GET /v1/model`: what the served bundle is (see `BundleMeta.summary`), and what one
    request to it may hold."""

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
    limits: InputLimits | None = Field(
        default=None, description="What one request to `/v1/predict` may hold."
    )


class ModelRef(BaseModel):
    """Which model answered."""

    name: str
    version: str


class PredictionOut(BaseModel):
    """The result for one input."""

    label: str = Field(description="The most probable label.")
    score: float = Field(description="Probability of `label`, in [0, 1].")
    probabilities: dict[str, float] = Field(description="Probability of every label; sums to 1.")
    ood_score: float | None = Field(
        default=None,
        description="Out-of-distribution score: about 1 for inputs like the validation data "
        "(about 0 for a convolutional model, whose score adds an early stage's), larger "
        "further out; compare it with the threshold, or read in_distribution (null: the "
        "bundle has no monitoring profile).",
    )
    in_distribution: bool | None = Field(
        default=None,
        description="False when `ood_score` is above the bundle's threshold, calibrated to "
        "flag 1 % of in-distribution inputs (null: no monitoring profile).",
    )


class PredictResponse(BaseModel):
    """`POST /v1/predict`: one prediction per input, in request order."""

    request_id: str = Field(
        description="The request's id, also in the `X-Request-ID` header and the prediction "
        "log: the client's own `X-Request-ID` unless another request had taken it."
    )
    model: ModelRef = Field(description="The model that made these predictions.")
    predictions: list[PredictionOut]


class ReloadRequest(BaseModel):
    """`POST /v1/admin/reload` body (optional): which bundle to serve next."""

    model_config = ConfigDict(extra="forbid")

    bundle: str | None = Field(
        default=None,
        min_length=1,
        description="Bundle folder on the server; default: the served bundle's folder, re-read.",
    )


class ReloadResponse(BaseModel):
    """`POST /v1/admin/reload`: the model swapped out and the one now serving."""

    previous: ModelRef
    current: ModelRef
    bundle: str = Field(description="Folder of the bundle now served.")


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer: one sentence saying what is wrong."""

    detail: str = Field(
        examples=[
            "file 0 ('cat.txt'): not an image: the file is none of the accepted formats "
            "(PNG, JPEG, GIF, WEBP, BMP, TIFF)"
        ]
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


def predict_request_body(
    api_input: ApiInput, max_inputs: int, max_text_chars: int
) -> dict[str, Any]:
    """The OpenAPI `requestBody` of `POST /v1/predict` for a modality's kind of input.

    The documented limits are the server's own (`max_files`, `max_text_chars`), so a client or a
    schema-driven test can tell an accepted request from a refused one without trying it.
    """
    content: dict[str, Any]
    if api_input.kind == "texts":
        text = {
            "type": "string",
            "minLength": 1,
            "maxLength": max_text_chars,
            "pattern": NOT_BLANK_PATTERN,
            "description": "A text to classify; not empty, and not only spaces or invisible "
            "characters.",
        }
        texts = {
            "type": "array",
            "items": text,
            "minItems": 1,
            "maxItems": max_inputs,
            "description": "Texts to classify, in order.",
        }
        schema = {
            "title": "TextsRequest",
            "type": "object",
            "properties": {"texts": texts, "text": text},
            "additionalProperties": False,
            "oneOf": [{"required": ["texts"]}, {"required": ["text"]}],
            "description": TextsRequest.__doc__,
        }
        content = {"application/json": {"schema": schema}}
    else:
        accepted = ", ".join(api_input.suffixes)
        files = {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "minItems": 1,
            "maxItems": max_inputs,
            "description": f"One or more files ({accepted}), classified in order. The content is "
            "sniffed; part content types and file name extensions are not trusted.",
        }
        multipart = {
            "type": "object",
            "required": [FILES_FIELD],
            "properties": {FILES_FIELD: files},
        }
        encoding = {FILES_FIELD: {"contentType": ", ".join(api_input.content_types)}}
        content = {"multipart/form-data": {"schema": multipart, "encoding": encoding}}
    return {"required": True, "content": content}


class CardMetrics(BaseModel):
    """Test-split scores of the exported model (null where the bundle has none)."""

    accuracy: float | None
    f1_macro: float | None
    test_items: int | None = Field(description="Items in the test split.")
    unsupported_labels: list[str] = Field(
        description="Labels without a test item: left out of macro-F1."
    )
    data_fingerprint: str | None = Field(
        default=None,
        description="The fingerprint of the data the scores were computed on: not `data`'s "
        "(the training data's) when `mlfactory evaluate` ran after the data changed.",
    )


class ClassRow(BaseModel):
    """One label's test scores."""

    label: str
    precision: float | None
    recall: float | None
    f1: float | None
    support: int | None = Field(description="Test items of this label.")


class TrainingData(BaseModel):
    """The data the model was trained and tested on."""

    source: str | None = Field(description="The recipe's `data.source`.")
    version: str | None = Field(
        default=None,
        description="The versioned source at the commit it was read from (`dvc:PATH@<commit>`): "
        "it names exactly this data. None for a source that is not versioned.",
    )
    fingerprint: str | None = Field(description="Hash of every item's content, label and split.")
    splits: dict[str, int] | None = Field(description="Items per split (train, val, test).")
    counts: dict[str, dict[str, int]] | None = Field(description="Items per split and label.")


class Lineage(BaseModel):
    """Where the model came from."""

    git_commit: str | None
    mlflow_run_id: str | None
    recipe: str | None = Field(description="The recipe's name.")


class ProfileSummary(BaseModel):
    """The monitoring reference profile stored in the bundle (`profile.json`)."""

    source: str | None = None
    created_at: str | None = None
    reference_items: int | None = None
    reference_accuracy: float | None = None
    reference_confidence: float | None = None
    temperature: float | None = None
    embedding_dim: int | None = None
    ood_method: str | None = None
    ood_threshold: float | None = None
    ood_false_positive_rate: float | None = None
    ood_expected_rate: float | None = Field(
        default=None,
        description="The share of in-distribution inputs the threshold flags: the false-positive "
        "rate, or more when too few inputs were held out to calibrate it (null: older profiles).",
    )
    ood_rate_low: float | None = Field(
        default=None,
        description="With ood_rate_high: where this profile's own rate lies with probability 0.9, "
        "given how many inputs were held out to calibrate it (null: older profiles).",
    )
    ood_rate_high: float | None = None
    features: dict[str, str] = Field(
        default_factory=dict, description="Input-summary features compared for drift, by kind."
    )
    problem: str | None = Field(default=None, description="Why the profile could not be read.")


class ModelCard(BaseModel):
    """`GET /v1/model/card`: the served model's card (see `mlfactory.model_card`)."""

    name: str
    version: str
    modality: str
    labels: list[str]
    created_at: str | None
    metrics: CardMetrics
    per_class: list[ClassRow] = Field(description="One row per label, in output order.")
    confusion_matrix: list[list[int]] | None = Field(
        description="Test counts: row i is true label i, column j predicted label j."
    )
    data: TrainingData
    lineage: Lineage
    reference_profile: ProfileSummary | None = Field(
        description="null: the bundle has no monitoring reference profile."
    )


class FeedbackIn(BaseModel):
    """One true label for `POST /v1/feedback`."""

    model_config = ConfigDict(extra="forbid")

    request_id: RequestId = Field(description="The `request_id` of the prediction's response.")
    input_index: int = Field(
        default=0,
        ge=0,
        le=2**31 - 1,
        description="The input's position in that request (0: the first).",
    )
    label: str = Field(
        min_length=1, max_length=MAX_LABEL_CHARS, description="One of the model's labels."
    )

    @field_validator("input_index", mode="before")
    @classmethod
    def _a_json_number(cls, value: object) -> object:
        """A JSON number (326 or 326.0, as JSON Schema's integer allows), not "0" or true,
        which lax parsing would read as 0 and 1."""
        if isinstance(value, bool | str):
            raise ValueError("must be a JSON integer, not a string or a boolean")
        return value


class FeedbackResponse(BaseModel):
    """`POST /v1/feedback`: how many labels were stored."""

    stored: int = Field(description="Labels stored; the same input twice counts once (the last).")


class DriftCheckOut(BaseModel):
    """One drift check of a window (see docs/monitoring.md, "The drift checks")."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="The feature, `predicted_label`, `confidence`, `ood_score`, ...")
    kind: Literal["feature", "label", "confidence", "embedding"]
    statistic: float | None
    p_value: float | None = Field(description="Corrected for multiple testing; null: too few.")
    drift: bool


class LabelOut(BaseModel):
    """One label of a drift report: its predicted share, and its live accuracy."""

    label: str
    reference_share: float = Field(description="Share of the reference predicted as it.")
    window_share: float | None = Field(description="Share of the window predicted as it.")
    labelled: int = Field(description="Window predictions whose true label (feedback) is it.")
    live: float | None = Field(description="Share of those predicted right; null: none.")


class DriftReportOut(BaseModel):
    """`GET /v1/monitoring/drift`: the JSON contract of `mlfactory monitor --json`."""

    model_config = ConfigDict(extra="allow")

    model: ModelRef
    window: dict[str, Any] = Field(description='{"from", "to", "n"}: the checked predictions.')
    drift: bool = Field(description="True when any check drifts after the correction.")
    checks: list[DriftCheckOut]
    ood: dict[str, Any] = Field(
        description='{"fraction", "threshold", "expected", "flagged"}: "expected" is the '
        "share of in-distribution inputs expected above the threshold (the false-positive rate "
        "it was calibrated to, or 1 / (n + 1) when its n calibration scores were fewer than "
        'that rate needs); "flagged" lists the most '
        'out-of-distribution inputs, highest score first (at most 10), each {"request_id", '
        '"input_index", "time", "label", "confidence", "ood_score", "true_label"}'
    )
    accuracy: dict[str, Any] = Field(
        description='{"estimated", "estimated_ci": [lo, hi], "estimated_method": "atc" or '
        '"cbpe", "mean_confidence", "reference_confidence", "labelled", "live", "live_ci"}'
    )
    notes: list[str] = Field(
        default_factory=list, description="How to read this report, if anything."
    )
    labels: list[LabelOut] = Field(
        default_factory=list, description="Every label of the bundle, in the bundle's order."
    )


class HistoryBucketOut(BaseModel):
    """One time bucket of `GET /v1/monitoring/history` (nulls where the bucket has no data)."""

    from_: str = Field(alias="from", description="Start of the bucket (ISO 8601, UTC).")
    to: str = Field(description="End of the bucket.")
    n: int = Field(description="Predictions in the bucket.")
    ood_fraction: float | None
    accuracy_estimated: float | None
    accuracy_estimated_ci: list[float | None] | None
    accuracy_live: float | None
    labelled: int
    drift: bool | None = Field(description="The bucket's verdict; null: too few predictions.")
    p_values: dict[str, float | None] = Field(description="Corrected p-value of each check.")
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    requests: int


class HistoryOut(BaseModel):
    """`GET /v1/monitoring/history`: the window cut into equal time spans, oldest first."""

    level: float = Field(description="The level each bucket's `drift` is decided at.")
    buckets: list[HistoryBucketOut]
