"""The service through httpx/TestClient against the real default model, and once over real HTTP."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from app.config import Settings
from app.inference import Predictor
from app.main import create_app
from tests.conftest import BUNDLED, ROOT, tone
from training.export import ExportedModel, resolve_model_dir
from training.extraction import extract_one

MODELS = ROOT / "models"
CLIP = BUNDLED / "wav" / "03a01Wa.flac"  # speaker 03, anger


def wav_bytes(samples: np.ndarray, sr: int, subtype: str = "PCM_16", format: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, sr, subtype=subtype, format=format)
    return buf.getvalue()


def clip_as(format: str = "WAV", subtype: str = "PCM_16", path: Path = CLIP) -> bytes:
    y, sr = sf.read(path, dtype="float32")
    return wav_bytes(y, sr, subtype=subtype, format=format)


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(Settings(model_path=MODELS))) as c:
        yield c


@pytest.fixture(scope="module")
def served() -> ExportedModel:
    return ExportedModel.load(MODELS)


def post(client, data: bytes, name: str = "clip.wav", field: str = "file"):
    return client.post("/predict", files={field: (name, data, "audio/wav")})


def test_health_reports_the_loaded_model(client, served):
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "model": {"name": served.name, "version": served.version}}


def test_model_metadata(client, served):
    r = client.get("/model")
    assert r.status_code == 200
    body = r.json()
    assert body["labels"] == served.labels and body["version"] == served.version
    assert body["features"] == served.metadata["features"]
    assert body["evaluation"]["protocol"] and "uar" in body["evaluation"]["metrics"]
    assert Path(body["path"]) == resolve_model_dir(MODELS)


def test_predict_on_a_real_clip(client, served):
    r = post(client, clip_as("WAV"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert list(body["probabilities"]) == served.labels
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert body["emotion"] == max(body["probabilities"], key=body["probabilities"].get)
    assert body["probability"] == body["probabilities"][body["emotion"]]
    info = sf.info(CLIP)
    assert body["audio"] == {"duration": pytest.approx(info.duration, abs=1e-3), "sample_rate": 16000,
                             "channels": 1, "format": "WAV"}
    assert body["model"] == {"name": served.name, "version": served.version}


def test_service_answers_what_training_features_and_the_export_give(client, served):
    """Parity: the service's path (bytes -> features -> signature) equals training's (file -> features)."""
    predictor = Predictor(served, threads=1, max_batch=1, max_audio_seconds=600)
    for path in sorted((BUNDLED / "wav").glob("1[0-6]a0[1-2]*.flac"))[:6]:
        _, service_features = predictor.prepare(path.read_bytes(), path.name)
        training_features = extract_one(str(path), served.features)
        np.testing.assert_array_equal(service_features, training_features)
        r = post(client, path.read_bytes(), path.name)
        expected = served.predict(training_features[None])[0]
        np.testing.assert_allclose(list(r.json()["probabilities"].values()), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_wav_sample_formats_and_stereo_are_accepted(client, subtype):
    data = wav_bytes(tone(2.0, 44100, channels=2), 44100, subtype=subtype)
    r = post(client, data)
    assert r.status_code == 200, r.text
    assert r.json()["audio"] == {"duration": 2.0, "sample_rate": 44100, "channels": 2, "format": "WAV"}


@pytest.mark.parametrize("format,subtype,name", [("FLAC", "PCM_16", "a.flac"), ("OGG", "VORBIS", "a.ogg"),
                                                 ("AIFF", "PCM_16", "a.aiff"), ("AIFF", "PCM_16", "aiff-named.wav")])
def test_other_containers_decode(client, format, subtype, name):
    r = post(client, clip_as(format, subtype), name)
    assert r.status_code == 200, r.text
    assert r.json()["audio"]["format"] == format


def test_missing_file_field(client):
    r = client.post("/predict", files={"audio": ("clip.wav", clip_as(), "audio/wav")})
    assert r.status_code == 400 and r.json()["code"] == "missing_file"
    assert "field named 'file'" in r.json()["detail"]
    r = client.post("/predict")
    assert r.status_code == 400 and r.json()["code"] == "missing_file"


def test_raw_body_instead_of_multipart(client):
    r = client.post("/predict", content=clip_as(), headers={"content-type": "audio/wav"})
    assert r.status_code == 400 and r.json()["code"] == "missing_file"


def test_empty_file(client):
    r = post(client, b"", "empty.wav")
    assert r.status_code == 400
    assert r.json() == {"detail": "'empty.wav' is empty (0 bytes)", "code": "empty_file"}


@pytest.mark.parametrize("data", [b"this is a text file, not audio\n" * 20, b"RIFF\x24\x00\x00\x00WAVEfmt ",
                                  bytes(range(256)) * 40])
def test_not_audio(client, data):
    r = post(client, data, "notes.txt")
    assert r.status_code == 415
    body = r.json()
    assert body["code"] == "unsupported_audio" and "notes.txt" in body["detail"] and "WAV" in body["detail"]


def test_truncated_wav_decodes_what_is_there(client):
    data = clip_as()
    r = post(client, data[: len(data) // 2])
    assert r.status_code == 200, "a cut-off WAV holds valid samples up to the cut"


def test_too_short(client):
    r = post(client, wav_bytes(tone(0.2, 16000), 16000), "blip.wav")
    assert r.status_code == 422
    assert r.json()["code"] == "audio_too_short" and "blip.wav" in r.json()["detail"]


def test_too_large_is_refused_while_reading():
    settings = Settings(model_path=MODELS, max_upload_mb=0.05)
    with TestClient(create_app(settings)) as c:
        big = wav_bytes(tone(3.0, 16000), 16000)  # ~96 kB > 52 kB
        r = post(c, big)
        assert r.status_code == 413 and r.json()["code"] == "payload_too_large"

        def chunks():  # no Content-Length: the limit is enforced on the stream
            boundary = b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n"
            yield boundary
            for i in range(0, len(big), 8192):
                yield big[i: i + 8192]
            yield b"\r\n--xyz--\r\n"

        r = c.post("/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=xyz"})
        assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
        assert post(c, wav_bytes(tone(1.0, 16000), 16000)).status_code == 200


def test_too_long_audio():
    with TestClient(create_app(Settings(model_path=MODELS, max_audio_seconds=2))) as c:
        r = post(c, wav_bytes(tone(3.0, 8000), 8000))
        assert r.status_code == 413 and r.json()["code"] == "audio_too_long"


def test_unknown_route_and_method_are_json(client):
    assert client.get("/nope").json()["code"] == "not_found"
    r = client.get("/predict")
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"


def test_no_model_keeps_the_process_up_and_says_why(tmp_path):
    with TestClient(create_app(Settings(model_path=tmp_path))) as c:
        r = c.get("/health")
        assert r.status_code == 503
        assert r.json()["status"] == "unavailable" and str(tmp_path) in r.json()["reason"]
        r = post(c, clip_as())
        assert r.status_code == 503 and r.json()["code"] == "model_unavailable"
        assert c.get("/model").status_code == 503


def test_openapi_documents_the_contract(client):
    spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/predict"]["post"]
    assert {"200", "400", "413", "415", "422", "503"} <= set(predict["responses"])
    assert "example" in spec["components"]["schemas"]["PredictResponse"]
    assert {"/health", "/model"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


def test_concurrent_requests_batched_get_the_same_answers(served):
    """Requests answered together by one model call get what they get alone."""
    clips = [p.read_bytes() for p in sorted((BUNDLED / "wav").glob("0[89]a0*.flac"))[:12]]

    async def scenario():
        predictor = Predictor(served, threads=2, max_batch=32, max_audio_seconds=600)
        alone = [(await predictor.predict(c)).probabilities for c in clips]
        together = await asyncio.gather(*[predictor.predict(c) for c in clips])
        calls = predictor._runner.calls
        await predictor.aclose()
        return alone, [t.probabilities for t in together], calls

    alone, together, calls = asyncio.run(scenario())
    assert calls < 2 * len(clips), "some requests shared a model call"
    for a, b in zip(alone, together):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_uvicorn_process_over_real_http():
    port = _free_port()
    env = {**os.environ, "SER_PORT": str(port), "SER_HOST": "127.0.0.1", "SER_LOG_LEVEL": "warning"}
    proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "service did not become healthy in 90 s"
            time.sleep(0.5)
        r = httpx.post(f"{base}/predict", files={"file": ("clip.wav", clip_as(), "audio/wav")}, timeout=30)
        assert r.status_code == 200 and sum(r.json()["probabilities"].values()) == pytest.approx(1, abs=1e-5)
        r = httpx.post(f"{base}/predict", files={"file": ("x.txt", b"hello", "text/plain")}, timeout=30)
        assert r.status_code == 415 and r.json()["code"] == "unsupported_audio"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
