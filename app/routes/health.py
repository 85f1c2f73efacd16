from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app import metrics
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
    description="200 with the model once every worker process has loaded and warmed it up and this worker is "
                "not shutting down; 503 with the reason otherwise (model loading or failed, some workers still "
                "loading, or draining after SIGTERM).",
    responses={503: {"model": HealthResponse, "description": "not ready; 'reason' says why"}},
)
async def ready(request: Request):
    status = _model_status(request, draining=request.app.state.draining)
    workers = request.app.state.settings.workers
    if isinstance(status, JSONResponse) or workers == 1:
        return status
    # Each worker listens only once its model is loaded, and the kernel gives new connections only to the
    # workers listening: traffic sent when the first is ready all goes to it, and keep-alive connections
    # (a load balancer's, a client pool's) stay there. So the instance is ready when every worker is.
    loaded = metrics.workers_ready()
    if loaded is not None and loaded < workers:
        return _unavailable(f"{loaded} of {workers} workers have loaded the model")
    return status


def _model_status(request: Request, *, draining: bool):
    """200 with the served model, or 503 with why not (draining, or no model: loading or failed)."""
    predictor = request.app.state.predictor
    reason = None
    if draining:
        reason = "shutting down: finishing the requests in flight"
    elif predictor is None:
        reason = request.app.state.load_error or "model not loaded yet"
    if reason is not None:
        return _unavailable(reason)
    return HealthResponse(status="ok", model=ModelRef(name=predictor.model.name, version=predictor.model.version))


def _unavailable(reason: str) -> JSONResponse:
    return JSONResponse(HealthResponse(status="unavailable", reason=reason).model_dump(exclude_none=True),
                        status_code=503)
