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
    return _model_status(request, draining=False)


@router.get(
    "/health/live",
    response_model=HealthResponse,
    response_model_exclude_none=True,
    summary="Liveness: the process answers",
    description="Always 200 while the process runs, whether or not a model is loaded: a liveness probe that "
                "fails restarts the process, which a missing model or a shutdown in progress would not mend.",
)
async def live() -> HealthResponse:
    return HealthResponse(status="ok")


@router.get(
    "/health/ready",
    response_model=HealthResponse,
    response_model_exclude_none=True,
    summary="Readiness: send traffic here",
    description="200 with the model once it is loaded and warmed up and the worker is not shutting down; "
                "503 with the reason otherwise (model loading or failed, or draining after SIGTERM).",
    responses={503: {"model": HealthResponse, "description": "not ready; 'reason' says why"}},
)
async def ready(request: Request):
    return _model_status(request, draining=request.app.state.draining)


def _model_status(request: Request, *, draining: bool):
    """200 with the served model, or 503 with why not (draining, or no model: loading or failed)."""
    predictor = request.app.state.predictor
    reason = None
    if draining:
        reason = "shutting down: finishing the requests in flight"
    elif predictor is None:
        reason = request.app.state.load_error or "model not loaded yet"
    if reason is not None:
        return JSONResponse(HealthResponse(status="unavailable", reason=reason).model_dump(exclude_none=True),
                            status_code=503)
    return HealthResponse(status="ok", model=ModelRef(name=predictor.model.name, version=predictor.model.version))
