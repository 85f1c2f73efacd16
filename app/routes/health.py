from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.schemas import HealthResponse, ModelRef

router = APIRouter(tags=["service"])


@router.get(
    "/health",
    response_model=HealthResponse,
    response_model_exclude_none=True,
    summary="Liveness and readiness",
    description="200 with the served model's name and version once the model is loaded and warmed up; "
                "503 with the reason when no model could be loaded (the process stays up to say so).",
    responses={503: {"model": HealthResponse, "description": "no model loaded; 'reason' says why"}},
)
def health(request: Request):
    predictor = request.app.state.predictor
    if predictor is None:
        body = HealthResponse(status="unavailable", reason=request.app.state.load_error or "model not loaded yet")
        return JSONResponse(body.model_dump(exclude_none=True), status_code=503)
    return HealthResponse(status="ok", model=ModelRef(name=predictor.model.name, version=predictor.model.version))
