"""`GET /v1/model/card`: the served model's card, for the web UI and any other client."""

from __future__ import annotations

from fastapi import APIRouter, Request

from mlfactory.bundle import Bundle
from mlfactory.model_card import model_card
from mlfactory.serving.schemas import ModelCard

router = APIRouter()


@router.get("/v1/model/card", response_model=ModelCard, summary="The served model's card")
def card(request: Request) -> ModelCard:
    """Test metrics, per-class scores, confusion matrix, data, lineage and reference profile.

    The card describes the bundle serving now (after a reload, the new one).
    """
    bundle: Bundle = request.app.state.bundle
    return ModelCard(**model_card(bundle))
