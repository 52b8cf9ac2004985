"""`GET /health` and `GET /v1/model`: is a model loaded, and which one.

Both also answer `HEAD` (load balancers and uptime checks probe with it); a HEAD answer has the
GET answer's status and headers and no body.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from mlfactory.serving.predict import current_predictor
from mlfactory.serving.schemas import ErrorResponse, HealthResponse, InputLimits, ModelInfo
from mlfactory.serving.settings import ServingSettings

router = APIRouter()


@router.get("/health", response_model=HealthResponse, responses={503: {"model": ErrorResponse}})
async def health(request: Request) -> HealthResponse:
    """Liveness and readiness: answers once the model is loaded."""
    current_predictor(request)
    return HealthResponse()


@router.get("/v1/model", response_model=ModelInfo)
async def model_info(request: Request) -> ModelInfo:
    """The served bundle's name, version, modality, labels and metrics, and the server's
    limits on one prediction request."""
    settings: ServingSettings = request.app.state.settings
    limits = InputLimits(**{name: getattr(settings, name) for name in InputLimits.model_fields})
    return ModelInfo(**request.app.state.bundle.meta.summary(), limits=limits)


# HEAD is left out of the schema: it is GET without a body, and clients need no docs for it.
router.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)
router.add_api_route("/v1/model", model_info, methods=["HEAD"], include_in_schema=False)
