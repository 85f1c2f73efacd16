"""The service's Prometheus metrics, and their exposition for GET /metrics.

With several uvicorn workers each process counts on its own; ``app/server.py`` then gives the workers a
shared ``PROMETHEUS_MULTIPROC_DIR`` (before they import this module: prometheus-client picks its storage
at import), every process writes its values there, and a scrape, whichever worker answers it, sums them.
That is why the queue depth is a ``livesum`` gauge (a dead worker's queue is not counted) and the model is
a gauge set to 1 rather than an ``Info`` metric (which multiprocess mode does not support).
"""

from __future__ import annotations

import os

from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest, multiprocess)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter("ser_requests", "HTTP requests answered, by route template, method and status",
                   ["route", "method", "status"])
ERRORS = Counter("ser_request_errors", "error answers by route, status and the body's error code "
                 "(no_speech, unsupported_audio, overloaded, unauthorized, ...)", ["route", "status", "code"])
LATENCY = Histogram("ser_request_duration_seconds", "time from a request's arrival to the end of its answer",
                    ["route"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
AUDIO_SECONDS = Counter("ser_audio_seconds", "seconds of uploaded audio analysed by POST /predict")
BATCH_SIZE = Histogram("ser_model_batch_size", "model inputs answered by one model call",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128))
QUEUE_DEPTH = Gauge("ser_queue_depth", "POST /predict and /profile requests held by the workers (receiving, "
                    "waiting or being processed); SER_MAX_QUEUE bounds each worker's",
                    multiprocess_mode="livesum")
MODEL = Gauge("ser_model_info", "the served model: its name and version as labels, value 1",
              ["name", "version"], multiprocess_mode="max")
WORKERS_READY = Gauge("ser_workers_ready", "worker processes that have loaded the model and serve",
                      multiprocess_mode="livesum")


def workers_ready() -> int | None:
    """How many worker processes have loaded the model (:data:`WORKERS_READY` summed over the live workers'
    files), or None with one process, which knows that by itself."""
    if not os.environ.get(MULTIPROC_ENV):
        return None
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return int(registry.get_sample_value("ser_workers_ready") or 0)


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus's text format: this process's, or every worker's summed in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST
