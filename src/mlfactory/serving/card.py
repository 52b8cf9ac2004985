"""`GET /v1/model/card`: the served model's card, for the web UI and any other client."""

from __future__ import annotations

from fastapi import APIRouter, Request

from mlfactory.model_card import model_card
from mlfactory.predictor import Predictor
from mlfactory.serving.schemas import ModelCard

router = APIRouter()


@router.get("/v1/model/card", response_model=ModelCard, summary="The served model's card")
def card(request: Request) -> ModelCard:
    """Test metrics, per-class scores, confusion matrix, data, lineage and reference profile.

    The card describes the bundle serving now (after a reload, the new one). A profile the
    server does not use (its arrays cannot be read, or it does not fit the model) has its
    `problem` say why, as the monitoring endpoints do.
    """
    predictor: Predictor = request.app.state.predictor
    card = model_card(predictor.bundle)
    summary = card.get("reference_profile")
    if summary is not None and summary["problem"] is None and predictor.profile is None:
        summary["problem"] = predictor.profile_problem
    return ModelCard(**card)
