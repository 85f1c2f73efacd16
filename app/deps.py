"""Dependencies shared by the routes."""

from __future__ import annotations

from fastapi import Request

from app.errors import APIError
from app.inference import Predictor


async def get_predictor(request: Request) -> Predictor:
    # async: a plain def dependency would cost a threadpool round trip on every request
    predictor: Predictor | None = request.app.state.predictor
    if predictor is None:
        raise APIError(503, "model_unavailable", f"no model loaded: {request.app.state.load_error}")
    return predictor
