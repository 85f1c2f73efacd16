"""The FastAPI application: ``uvicorn app.main:app`` or ``python -m app``."""

from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
# The service parallelises across requests (threads, workers); math libraries that also spread one small
# matrix product over every core only make the threads wait on each other (+20 % throughput measured
# with benchmarks/serving.py on 2 cores). Must be set before numpy is imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from fastapi import FastAPI  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402

from app import __version__  # noqa: E402
from app.config import Settings  # noqa: E402
from app.errors import BodySizeLimit, install_error_handlers  # noqa: E402
from app.inference import Predictor  # noqa: E402
from app.routes import health, model, page, predict, profile  # noqa: E402
from training.runtime import retain_freed_memory  # noqa: E402

log = logging.getLogger("app")

DESCRIPTION = """\
Speech emotion recognition over HTTP. Upload a short recording to **POST /predict** and get the
probability of every emotion the served model knows (see **GET /model** for its labels, how it was trained
and how it scored on speakers it never heard).

- `POST /predict`: multipart/form-data with the audio in the field `file` (WAV; FLAC, OGG, AIFF, MP3 too).
- `POST /profile`: a speaker profile from some of a speaker's clips (models with a speaker reference);
  send it back with their clips to `POST /predict` (field `profile`) for answers relative to their voice.
- `GET /health`: 200 when the model is loaded and warmed up, 503 with the reason otherwise.
- `GET /model`: the served model's metadata.

Errors are JSON `{"detail": ..., "code": ...}` with a 4xx status that says what was wrong.
"""


def _configure_logging(level: str) -> None:
    """uvicorn configures only its own loggers; give ours the same look (once)."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)-9s %(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(level.upper())


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    _configure_logging(settings.log_level)
    # Freed feature buffers stay in the process for the next request instead of being page-faulted back
    # in: 1.7x faster features per clip (see training/runtime.py).
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
        except Exception as exc:  # any reason at all: stay up and report it on /health
            app.state.load_error = f"{type(exc).__name__}: {exc}"
            log.error("no model loaded from %s: %s", settings.model_path, app.state.load_error)
        yield
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
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    install_error_handlers(app)
    app.include_router(predict.router)
    app.include_router(profile.router)
    app.include_router(health.router)
    app.include_router(model.router)
    app.include_router(page.router)  # GET /: the page to try the service in a browser (app/static/)

    return app


app = create_app()
