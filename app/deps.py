"""Dependencies shared by the routes."""

from __future__ import annotations

from fastapi import Request

from app.errors import APIError
from app.inference import Predictor


def get_predictor(request: Request) -> Predictor:
    predictor: Predictor | None = request.app.state.predictor
    if predictor is None:
        raise APIError(503, "model_unavailable", f"no model loaded: {request.app.state.load_error}")
    return predictor
