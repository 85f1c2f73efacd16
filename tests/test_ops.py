"""Operations, in process: metrics, API keys, CORS, back-pressure, the processing deadline, readiness, the
access log and the OpenAPI contract of all of them; against the real default model and bundled audio.
(The same over real HTTP with several worker processes and signals: tests/test_server.py.)"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from app.logs import JsonFormatter
from app.main import _drain_on_signals, create_app
from tests.conftest import BUNDLED, ROOT

MODELS = ROOT / "models"
CLIP = BUNDLED / "wav" / "03a01Wa.flac"
KEYS = ("first-key-5f1d", "second-key-a09c")


def silence() -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(2 * 16000, dtype=np.float32), 16000, format="WAV")
    return buf.getvalue()


def post(client, data: bytes = None, name: str = "clip.flac", **kwargs):
    data = CLIP.read_bytes() if data is None else data
    return client.post("/predict", files={"file": (name, data, "application/octet-stream")}, **kwargs)


def metric(text: str, sample: str, **labels) -> float:
    """The sum of the samples called ``sample`` whose labels include ``labels``."""
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(Settings(model_path=MODELS))) as c:
        yield c


@pytest.fixture(scope="module")
def alone(client) -> dict:
    """The clip's answer, sent alone on an idle service."""
    r = post(client)
    assert r.status_code == 200, r.text
    return r.json()["probabilities"]


class Captured(logging.Handler):
    """The service's log records, formatted as in production with SER_LOG_FORMAT=json."""

    def __init__(self):
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(self.format(record))

    def __enter__(self):
        logging.getLogger("app").addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger("app").removeHandler(self)

    def access(self) -> list[dict]:
        return [entry for entry in map(json.loads, self.lines) if entry["logger"] == "app.access"]


def test_metrics_count_requests_errors_audio_and_batches(client, alone):
    before = client.get("/metrics")
    assert before.status_code == 200 and before.headers["content-type"].startswith("text/plain")
    before = before.text
    assert post(client).status_code == 200
    assert post(client, silence(), "silence.wav").json()["code"] == "no_speech"
    assert post(client, b"not audio at all\n" * 10, "notes.txt").json()["code"] == "unsupported_audio"
    assert client.get("/no/such/path").status_code == 404
    after = client.get("/metrics").text

    def delta(sample, **labels):
        return metric(after, sample, **labels) - metric(before, sample, **labels)

    assert delta("ser_requests_total", route="/predict", method="POST", status="200") == 1
    assert delta("ser_requests_total", route="/predict", method="POST", status="422") == 1
    assert delta("ser_requests_total", route="/predict", method="POST", status="415") == 1
    assert delta("ser_requests_total", route="unmatched", status="404") == 1  # a route template, not the path
    assert metric(after, "ser_requests_total", route="/no/such/path") == 0
    assert delta("ser_request_errors_total", route="/predict", status="422", code="no_speech") == 1
    assert delta("ser_request_errors_total", route="/predict", status="415", code="unsupported_audio") == 1
    assert delta("ser_request_duration_seconds_count", route="/predict") == 3
    # The audio of answered uploads (not the silence refused as no_speech).
    assert delta("ser_audio_seconds_total") == pytest.approx(sf.info(CLIP).duration, abs=1e-3)
    assert delta("ser_model_batch_size_count") == 1 and delta("ser_model_batch_size_sum") == 1
    assert metric(after, "ser_queue_depth") == 0
    model = client.get("/model").json()
    assert metric(after, "ser_model_info", name=model["name"], version=str(model["version"])) == 1


def test_metrics_and_probes_are_documented(client):
    spec = client.get("/openapi.json").json()
    assert {"/metrics", "/health/live", "/health/ready", "/health"} <= set(spec["paths"])
    assert "text/plain" in spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert "securitySchemes" not in spec.get("components", {})  # no keys: nothing to authorise


def test_each_error_status_shows_its_own_examples(client):
    spec = client.get("/openapi.json").json()
    for path in ("/predict", "/profile"):
        responses = spec["paths"][path]["post"]["responses"]
        codes = {}
        for status in ("400", "413", "415", "422", "503"):
            examples = responses[status]["content"]["application/json"]["examples"]
            codes[status] = {e["value"]["code"] for e in examples.values()}
            assert all(set(e["value"]) == {"detail", "code"} for e in examples.values())
        assert codes["400"] == {"missing_file", "empty_file"}
        assert codes["413"] == {"payload_too_large", "audio_too_long"}
        assert codes["415"] == {"unsupported_audio"}
        assert {"no_speech", "audio_too_short", "profiles_unsupported"} <= codes["422"]
        assert codes["503"] == {"model_unavailable", "overloaded", "timeout"}


def test_probes_live_and_ready(client, tmp_path):
    assert client.get("/health/live").json() == {"status": "ok"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json() == client.get("/health").json()
    with TestClient(create_app(Settings(model_path=tmp_path))) as no_model:
        assert no_model.get("/health/live").status_code == 200
        r = no_model.get("/health/ready")
        assert r.status_code == 503 and str(tmp_path) in r.json()["reason"]


def _worker_marks_ready(folder) -> int:
    """A separate process that records, as a worker does once its model is loaded, that it is ready, into the
    shared metrics ``folder``; returns its pid."""
    proc = subprocess.run([sys.executable, "-c", "import os; from app import metrics; "
                           "metrics.WORKERS_READY.set(1); print(os.getpid())"], cwd=ROOT, check=True,
                          capture_output=True, text=True, env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)})
    return int(proc.stdout)


def test_ready_only_once_every_worker_has_loaded_the_model(client, tmp_path, monkeypatch):
    """With several workers, /health/ready counts the workers that have loaded the model (their files in the
    folder the workers share) and answers 503 until all have; /health speaks for the answering worker alone."""
    from prometheus_client import multiprocess

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    settings = client.app.state.settings
    client.app.state.settings = settings.model_copy(update={"workers": 2})
    def not_ready(loaded: int) -> bool:
        r = client.get("/health/ready")
        return r.status_code == 503 and r.json()["reason"] == f"{loaded} of 2 workers have loaded the model"

    try:
        assert not_ready(0) and client.get("/health").status_code == 200
        first = _worker_marks_ready(tmp_path)
        assert not_ready(1)
        _worker_marks_ready(tmp_path)
        ready = client.get("/health/ready")
        assert ready.status_code == 200 and ready.json() == client.get("/health").json()
        multiprocess.mark_process_dead(first, str(tmp_path))  # a worker died: not ready until it is back
        assert not_ready(1)
    finally:
        client.app.state.settings = settings


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="POSIX signals")
def test_sigterm_marks_the_worker_not_ready_and_reaches_uvicorns_handler():
    """The hook the lifespan installs over uvicorn's signal handler (here a stand-in for it, on the main
    thread where signals arrive): SIGTERM makes /health/ready 503 and still reaches the handler."""
    app = create_app(Settings(model_path=MODELS))
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        _drain_on_signals(app)
        with TestClient(app) as c:
            assert c.get("/health/ready").status_code == 200
            os.kill(os.getpid(), signal.SIGTERM)
            r = c.get("/health/ready")
            assert r.status_code == 503 and "shutting down" in r.json()["reason"]
            assert c.get("/health/live").status_code == 200
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert received == [signal.SIGTERM]


def test_overload_is_refused_at_once_and_the_others_answered_right(alone):
    """A worker holding SER_MAX_QUEUE requests answers more with 503 overloaded and Retry-After; every
    request admitted gets the answer the clip gets alone."""
    data = CLIP.read_bytes()
    with TestClient(create_app(Settings(model_path=MODELS, max_queue=2, inference_threads=1))) as c:
        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(lambda _: post(c, data), range(48)))
        assert c.get("/metrics").status_code == 200
        assert post(c, data).status_code == 200  # the queue empties again
    statuses = [r.status_code for r in answers]
    assert set(statuses) == {200, 503}, statuses
    for r in answers:
        if r.status_code == 503:
            assert r.json()["code"] == "overloaded" and r.headers["retry-after"] == "1"
        else:
            np.testing.assert_allclose(list(r.json()["probabilities"].values()), list(alone.values()),
                                       rtol=1e-5, atol=1e-6)


def test_processing_longer_than_the_deadline_is_503_timeout():
    with TestClient(create_app(Settings(model_path=MODELS, request_timeout_s=0.001))) as c:
        r = post(c)
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "timeout" and r.headers["retry-after"] == "1"
        assert "SER_REQUEST_TIMEOUT_S" in r.json()["detail"]
    with TestClient(create_app(Settings(model_path=MODELS, request_timeout_s=60))) as c:
        assert post(c).status_code == 200


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    key_file = tmp_path_factory.mktemp("secrets") / "api-keys"
    key_file.write_text(f"# one key per line\n\n{KEYS[1]}\n")
    settings = Settings(model_path=MODELS, api_keys=KEYS[0], api_keys_file=key_file)
    with TestClient(create_app(settings)) as c:
        yield c


def test_keys_are_required_as_bearer_or_x_api_key(keyed, alone):
    for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"X-API-Key": "wrong"},
                    {"Authorization": f"Basic {KEYS[0]}"}, {"Authorization": "Bearer "}):
        r = post(keyed, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["code"] == "unauthorized" and set(r.json()) == {"detail", "code"}
        assert r.headers["www-authenticate"].startswith("Bearer")
    for headers in ({"Authorization": f"Bearer {KEYS[0]}"}, {"authorization": f"bearer {KEYS[1]}"},
                    {"X-API-Key": KEYS[0]}, {"X-API-Key": KEYS[1]}):  # SER_API_KEYS and SER_API_KEYS_FILE
        r = post(keyed, headers=headers)
        assert r.status_code == 200, (headers, r.text)
        assert r.json()["probabilities"] == pytest.approx(alone)
    assert keyed.get("/model").status_code == 401
    assert keyed.get("/no/such/path").status_code == 401  # what exists is not revealed without a key
    for path in ("/health", "/health/live", "/health/ready", "/metrics", "/docs", "/openapi.json"):
        assert keyed.get(path).status_code == 200, path
    # the page and its files load without a key: a person types theirs into the page's key field
    for path in ("/", "/page/app.js", "/page/style.css"):
        assert keyed.get(path).status_code == 200, path


def test_an_empty_or_missing_keys_file_is_refused_at_start(tmp_path):
    """A secret mounted empty (or not at all) must not leave the service open without saying so."""
    empty = tmp_path / "keys"
    empty.write_text("# rotated out\n\n")
    for path in (empty, tmp_path / "missing"):
        with pytest.raises(ValueError, match="SER_API_KEYS_FILE"):
            Settings.from_env({"SER_API_KEYS_FILE": str(path)})


def test_open_paths_are_configurable():
    settings = Settings(model_path=MODELS, api_keys=KEYS[0], auth_open_paths="/health*")
    with TestClient(create_app(settings)) as c:
        assert c.get("/health/ready").status_code == 200 and c.get("/health").status_code == 200
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers={"X-API-Key": KEYS[0]}).status_code == 200


def test_keys_never_reach_the_logs(keyed):
    with Captured() as logs:
        post(keyed, headers={"Authorization": f"Bearer {KEYS[0]}"})
        post(keyed, headers={"X-API-Key": KEYS[1]})
        post(keyed, headers={"X-API-Key": KEYS[1] + "-wrong"})
        keyed.get("/model", headers={"Authorization": f"Bearer {KEYS[0][:-1]}"})
    assert [(e["route"], e["status"]) for e in logs.access()] == [("/predict", 200), ("/predict", 200),
                                                                   ("/predict", 401), ("/model", 401)]
    text = "\n".join(logs.lines)
    assert KEYS[0][:-1] not in text and KEYS[1] not in text


def test_swagger_can_authorise_with_either_header(keyed):
    spec = keyed.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer", "description": schemes["bearer"]["description"]}
    assert schemes["apiKey"]["in"] == "header" and schemes["apiKey"]["name"] == "X-API-Key"
    predict = spec["paths"]["/predict"]["post"]
    assert predict["security"] == [{"bearer": []}, {"apiKey": []}]  # either one
    example = predict["responses"]["401"]["content"]["application/json"]["examples"]["unauthorized"]
    assert example["value"]["code"] == "unauthorized"
    for path in ("/health", "/health/ready", "/metrics"):
        assert "security" not in spec["paths"][path]["get"], path
    assert "swagger-ui" in keyed.get("/docs").text


def test_cors_only_for_the_configured_origins(client):
    assert "access-control-allow-origin" not in client.get("/health", headers={"Origin": "https://a.example"}).headers
    settings = Settings(model_path=MODELS, cors_origins="https://a.example", api_keys=KEYS[0])
    with TestClient(create_app(settings)) as c:
        preflight = c.options("/predict", headers={"Origin": "https://a.example",
                                                   "Access-Control-Request-Method": "POST",
                                                   "Access-Control-Request-Headers": "x-api-key"})
        assert preflight.status_code == 200  # no key needed to ask
        assert preflight.headers["access-control-allow-origin"] == "https://a.example"
        assert "x-api-key" in preflight.headers["access-control-allow-headers"].lower()
        refused = post(c, headers={"Origin": "https://a.example"})
        assert refused.status_code == 401  # and the page may read why
        assert refused.headers["access-control-allow-origin"] == "https://a.example"
        other = c.get("/health", headers={"Origin": "https://b.example"})
        assert "access-control-allow-origin" not in other.headers


def test_one_access_line_per_request_with_its_id(client):
    with Captured() as logs:
        r = post(client, headers={"X-Request-ID": "client-id.42"})
        forged = post(client, silence(), "silence.wav", headers={"X-Request-ID": "x\" level=error"})
        client.get("/health")
    assert r.headers["x-request-id"] == "client-id.42"
    generated = forged.headers["x-request-id"]
    assert generated != "x\" level=error" and len(generated) == 32
    ok, no_speech, health = logs.access()
    assert ok["request_id"] == "client-id.42" and ok["method"] == "POST" and ok["route"] == "/predict"
    assert ok["status"] == 200 and ok["batch"] == 1 and ok["code"] is None
    assert ok["audio_seconds"] == pytest.approx(sf.info(CLIP).duration, abs=1e-3) and ok["latency_ms"] > 0
    assert no_speech["request_id"] == generated and no_speech["code"] == "no_speech" and no_speech["status"] == 422
    assert health["route"] == "/health" and health["audio_seconds"] is None
    assert len(logs.access()) == 3
