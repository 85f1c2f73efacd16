from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from app.metrics import exposition

router = APIRouter(tags=["service"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description="The service's metrics in Prometheus's text format, summed over all worker processes: "
                "`ser_requests_total` (route, method, status), `ser_request_errors_total` (route, status, code), "
                "`ser_request_duration_seconds` (route), `ser_audio_seconds_total`, `ser_model_batch_size`, "
                "`ser_queue_depth`, `ser_model_info` (name, version).",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"example": "ser_requests_total{method=\"POST\",route=\"/predict\","
                                                           "status=\"200\"} 42.0\n"}},
                     "description": "Prometheus text exposition format"}},
)
def metrics() -> Response:  # a plain def: it reads every worker's files, off the event loop
    body, content_type = exposition()
    return Response(body, media_type=content_type)
