"""The FastAPI application: ``uvicorn app.main:app`` or ``python -m app``."""

from __future__ import annotations

import logging
import os
import signal
import threading
from contextlib import asynccontextmanager

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
# The service parallelises across requests (threads, workers); math libraries that also spread one small
# matrix product over every core only make the threads wait on each other (+20 % throughput measured
# with benchmarks/serving.py on 2 cores). Must be set before numpy is imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from fastapi import FastAPI  # noqa: E402
from fastapi.middleware.cors import CORSMiddleware  # noqa: E402
from fastapi.openapi.utils import get_openapi  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402

from app import __version__, logs, metrics  # noqa: E402
from app.config import Settings  # noqa: E402
from app.errors import BodySizeLimit, install_error_handlers  # noqa: E402
from app.inference import Predictor  # noqa: E402
from app.middleware import AccessLog, Admission, APIKeyAuth, path_matcher  # noqa: E402
from app.routes import health, metrics as metrics_route, model, page, predict, profile  # noqa: E402
from app.schemas import error_response  # noqa: E402
from speech_emotion.runtime import retain_freed_memory  # noqa: E402

log = logging.getLogger("app")

DESCRIPTION = """\
Speech emotion recognition over HTTP. Upload a short recording to **POST /predict** and get the
probability of every emotion the served model knows (see **GET /model** for its labels, how it was trained
and how it scored on speakers it never heard).

- `POST /predict`: multipart/form-data with the audio in the field `file` (WAV; FLAC, OGG, AIFF, MP3 too).
- `POST /profile`: a speaker profile from some of a speaker's clips (models with a speaker reference);
  send it back with their clips to `POST /predict` (field `profile`) for answers relative to their voice.
- `GET /health`: 200 when the model is loaded and warmed up, 503 with the reason otherwise;
  `GET /health/live` (the process answers) and `GET /health/ready` (loaded and not shutting down) for probes.
- `GET /model`: the served model's metadata.
- `GET /metrics`: Prometheus metrics of all workers.

Errors are JSON `{"detail": ..., "code": ...}` with a 4xx status that says what was wrong, or 503 with
`Retry-After` when the service is overloaded. When the service has API keys, send one with the
**Authorize** button (as a Bearer token or as `X-API-Key`).
"""

SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <API key>"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "X-API-Key: <API key>"},
}


def _drain_on_signals(app: FastAPI) -> None:
    """Mark the worker as draining (GET /health/ready -> 503) when uvicorn is told to stop, before handing the
    signal to uvicorn's handler, which stops accepting and lets the requests in flight finish. uvicorn
    installs its handlers before the lifespan starts and puts back the earlier ones when it stops."""
    if threading.current_thread() is not threading.main_thread():  # an in-process test client: no signals
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        handler = signal.getsignal(sig)
        if callable(handler):
            def draining(signum, frame, handler=handler):
                app.state.draining = True
                handler(signum, frame)
            signal.signal(sig, draining)


def _document_security(app: FastAPI, open_paths) -> None:
    """OpenAPI: the two ways to send a key (so Swagger's Authorize offers both) and a 401 on every operation
    that needs one."""
    def openapi() -> dict:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            spec.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            unauthorized = error_response("no API key, or not a valid one (WWW-Authenticate: Bearer)",
                                          "unauthorized")
            del unauthorized["model"]
            unauthorized["content"]["application/json"]["schema"] = {"$ref": "#/components/schemas/ErrorResponse"}
            for path, operations in spec["paths"].items():
                if open_paths(path):
                    continue
                for operation in operations.values():
                    operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
                    operation["responses"]["401"] = unauthorized
            app.openapi_schema = spec
        return app.openapi_schema
    app.openapi = openapi


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    logs.configure(log, settings.log_level, settings.log_format)
    # Freed feature buffers stay in the process for the next request instead of being page-faulted back
    # in: 1.7x faster features per clip (see speech_emotion/runtime.py).
    retain_freed_memory()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.predictor = None
        app.state.load_error = "model loading"
        try:
            app.state.predictor = await run_in_threadpool(
                Predictor.load, settings.model_path, threads=settings.threads_per_worker,
                max_batch=settings.max_batch, max_audio_seconds=settings.max_audio_seconds,
            )
            app.state.load_error = None
            metrics.MODEL.labels(app.state.predictor.model.name, str(app.state.predictor.model.version)).set(1)
            metrics.WORKERS_READY.set(1)
        except Exception as exc:  # any reason at all: stay up and report it on /health
            app.state.load_error = f"{type(exc).__name__}: {exc}"
            log.error("no model loaded from %s: %s", settings.model_path, app.state.load_error)
        _drain_on_signals(app)
        yield
        app.state.draining = True
        if app.state.predictor is not None:
            await app.state.predictor.aclose()

    app = FastAPI(
        title="Speech emotion recognition",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.predictor = None
    app.state.load_error = "model not loaded yet"
    app.state.draining = False
    # Outermost last: the access log sees every answer, refusals included; CORS headers go on 401s too
    # (so a browser page can read them), and preflight requests need no key.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(Admission, max_pending=settings.max_queue, paths={"/predict", "/profile"})
    keys = settings.keys()
    if keys:
        app.add_middleware(APIKeyAuth, keys=keys, open_paths=settings.open_paths)
        _document_security(app, path_matcher(settings.open_paths))
    if settings.cors_origin_list:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin_list, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "X-Request-ID"],
                           expose_headers=["X-Request-ID", "Retry-After"])
    app.add_middleware(AccessLog)
    install_error_handlers(app)
    app.include_router(predict.router)
    app.include_router(profile.router)
    app.include_router(health.router)
    app.include_router(model.router)
    app.include_router(metrics_route.router)
    app.include_router(page.router)  # GET /: the page to try the service in a browser (app/static/)

    return app


app = create_app()
