"""The service as operators run it: ``python -m app`` over real HTTP, with 2 worker processes where it
matters; metrics summed over the workers, JSON access lines without keys, graceful shutdown on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.server import _metrics_folder
from tests.conftest import BUNDLED
from tests.test_api import _free_port as free_port, _start_service as start
from tests.test_ops import metric, silence

CLIP = BUNDLED / "wav" / "03a01Wa.flac"
KEY = "operator-key-7c2e9b"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals, SO_REUSEPORT: Linux")


def test_two_workers_metrics_are_summed_and_logs_hold_no_keys():
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start(port, SER_WORKERS="2", SER_LOG_FORMAT="json", SER_API_KEYS=KEY, SER_LOG_LEVEL="info",
                 SER_KEEP_ALIVE_S="1")
    try:
        # Each request on a new connection: the kernel spreads connections over the two workers' sockets.
        for i in range(12):
            headers = {"Authorization": f"Bearer {KEY}"} if i % 2 else {"X-API-Key": KEY}
            r = httpx.post(f"{base}/predict", files={"file": ("clip.flac", CLIP.read_bytes())}, headers=headers,
                           timeout=60)
            assert r.status_code == 200, r.text
        for _ in range(2):
            r = httpx.post(f"{base}/predict", files={"file": ("silence.wav", silence())}, headers={"X-API-Key": KEY},
                           timeout=60)
            assert r.json()["code"] == "no_speech"
        assert httpx.post(f"{base}/predict", files={"file": ("clip.flac", b"x")},
                          headers={"X-API-Key": KEY + "x"}, timeout=60).status_code == 401
        scrapes = [httpx.get(f"{base}/metrics", timeout=30).text for _ in range(12)]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as idle:  # SER_KEEP_ALIVE_S reaches uvicorn
            idle.sendall(b"GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n")
            answer = b""
            while not answer.endswith(b"}"):  # the JSON body's end
                answer += idle.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            assert idle.recv(1) == b"" and time.monotonic() - started < 4  # closed after 1 s idle, not 5
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 0, output
    for text in scrapes:  # whichever worker answered the scrape, it counts both workers' requests
        assert metric(text, "ser_requests_total", route="/predict", status="200") == 12
        assert metric(text, "ser_request_errors_total", route="/predict", code="no_speech", status="422") == 2
        assert metric(text, "ser_request_errors_total", route="/predict", code="unauthorized", status="401") == 1
        assert metric(text, "ser_model_batch_size_count") == 12
        assert metric(text, "ser_audio_seconds_total") > 12 * 1.8
    entries = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    access = [e for e in entries if e["logger"] == "app.access" and not e["route"].startswith("/health")]
    assert len(access) == 12 + 2 + 1 + 12, output
    predict_pids = {e["pid"] for e in access if e["route"] == "/predict" and e["status"] == 200}
    scrape_pids = {e["pid"] for e in access if e["route"] == "/metrics"}
    assert len(predict_pids) == 2 and scrape_pids == predict_pids, "both workers answered and were scraped"
    assert any(e["logger"].startswith("uvicorn") for e in entries)  # uvicorn's own lines are JSON too
    assert KEY not in output


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_finishes_the_request_in_flight_and_exits_0(workers):
    """SIGTERM while an upload is half sent: the service stops accepting connections, the upload completes
    and is answered, and the process exits with status 0."""
    port = free_port()
    proc = start(port, SER_WORKERS=workers, SER_LOG_LEVEL="warning")
    body = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"clip.flac\"\r\n\r\n"
            + CLIP.read_bytes() + b"\r\n--b--\r\n")
    half = len(body) // 2
    try:
        conn = socket.create_connection(("127.0.0.1", port), timeout=60)
        conn.sendall(b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:half])
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while True:  # no new connections once the workers have stopped listening
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
            except OSError:
                break
            assert time.monotonic() < deadline, "still accepting connections 30 s after SIGTERM"
            time.sleep(0.2)
        assert proc.poll() is None, "exited with a request in flight"
        conn.sendall(body[half:])
        response = b""
        while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            response += chunk
        conn.close()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=120)[0].decode()
    assert response.startswith(b"HTTP/1.1 200"), response[:300]
    assert b'"probabilities"' in response
    assert proc.returncode == 0, output


def test_metrics_folder_is_fresh_at_each_start(tmp_path, monkeypatch):
    """Several workers: a new temporary folder, removed at exit; an operator's folder: emptied of the files
    of a previous run (whose counts would otherwise be summed with this run's)."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with _metrics_folder(workers=2):
        folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        assert folder.is_dir() and not any(folder.iterdir())
    assert not folder.exists() and "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    with _metrics_folder(workers=1):
        assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ  # one process: its own registry
    (tmp_path / "counter_4242.db").write_bytes(b"stale")
    (tmp_path / "notes.txt").write_text("not ours")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with _metrics_folder(workers=2):
        assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert tmp_path.is_dir()
