"""The service through httpx/TestClient against the real default model, and once over real HTTP."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from app.config import Settings
from app.inference import BatchingPipeline, Predictor
from app.main import create_app
from tests.conftest import BUNDLED, ROOT, speech, tone
from speech_emotion.model import ExportedModel, ModelMetadata, resolve_model_dir
from speech_emotion.predict import plan_windows
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
    assert body["features"] == served.metadata.features
    assert body["evaluation"]["protocol"] and "uar" in body["evaluation"]["metrics"]
    assert Path(body["path"]) == resolve_model_dir(MODELS)


@pytest.mark.parametrize("version", ["1", "newest"])
def test_metadata_is_a_typed_record_that_reads_and_writes_every_export(version):
    folder = resolve_model_dir(ROOT / "models") if version == "newest" else ROOT / "models" / "emotion" / version
    data = json.loads((folder / "metadata.json").read_text())
    record = ModelMetadata.from_dict(data)
    assert record.to_dict() == data and list(record.to_dict()) == list(data)  # same keys, same order
    assert record.labels == data["labels"] and record.input["shape"][0] is None
    newer = ModelMetadata.from_dict({**data, "calibration": {"temperature": 1.3}})  # a key from a later version
    assert newer.extra == {"calibration": {"temperature": 1.3}} and newer.to_dict()["calibration"]["temperature"] == 1.3
    with pytest.raises(ValueError, match="lacks features, labels"):
        ModelMetadata.from_dict({k: v for k, v in data.items() if k not in ("labels", "features")})


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
        # Training's path for a test clip alone: its cached base features, finished without a profile.
        training_features = served.features.finish(extract_one(str(path), served.features))
        np.testing.assert_array_equal(service_features, training_features)
        r = post(client, path.read_bytes(), path.name)
        expected = served.predict(training_features[None])[0]
        np.testing.assert_allclose(list(r.json()["probabilities"].values()), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW", "ALAW"])
def test_wav_sample_formats_and_stereo_are_accepted(client, subtype):
    data = wav_bytes(speech(2.0, 44100, channels=2), 44100, subtype=subtype)
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


@pytest.mark.parametrize("rate", [16000, 44100])
def test_a_float_file_with_nan_samples_is_refused_by_name(client, rate):
    """Float WAVs can hold NaN or infinity; such an upload gets a precise 422, not a 500 from the resampler
    (other rates) or a misleading no_speech (16 kHz)."""
    y, _ = sf.read(CLIP, dtype="float32")
    y[1000:1010] = np.nan
    y[2000] = np.inf
    r = post(client, wav_bytes(y, rate, subtype="FLOAT"), "damaged.wav")
    assert r.status_code == 422
    body = r.json()
    assert body["code"] == "invalid_audio" and "damaged.wav" in body["detail"] and "11 of its" in body["detail"]


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
        big = wav_bytes(speech(3.0, 16000), 16000)  # ~96 kB > 52 kB
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
        assert post(c, wav_bytes(speech(1.0, 16000), 16000)).status_code == 200


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
    profile = spec["paths"]["/profile"]["post"]
    assert {"200", "400", "413", "415", "422", "503"} <= set(profile["responses"])
    assert "POST /predict" in profile["description"] and "profile" in predict["description"]
    assert client.get("/docs").status_code == 200


def _queued_together(pipeline: BatchingPipeline, prepares: list) -> list:
    """Submit every job while the pipeline's one worker is held inside the first job's preparation, so all are
    waiting when it comes back: what happens under load. Results (or exceptions) in order."""
    release = threading.Event()
    first = prepares[0]

    def held():
        release.wait(10)
        return first()

    async def scenario():
        tasks = [asyncio.ensure_future(pipeline.submit(p)) for p in [held] + prepares[1:]]
        await asyncio.sleep(0)  # every submit has queued its job
        release.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    return asyncio.run(scenario())


def test_batched_model_calls_give_each_request_its_own_answer(served):
    """Requests queued together are answered by one model call, and each gets what it gets alone."""
    predictor = Predictor(served, threads=1, max_batch=32, max_audio_seconds=600)
    clips = sorted((BUNDLED / "wav").glob("0[89]a0*.flac"))[:12]
    features = [predictor.prepare(p.read_bytes(), p.name)[1] for p in clips]
    assert len({f.shape[0] for f in features}) > 1  # different lengths: padded together
    alone = [served.predict(f[None])[0] for f in features]

    pipeline = BatchingPipeline(served.predict, threads=1, max_batch=32)
    results = _queued_together(pipeline, [lambda i=i: (i, [features[i]]) for i in range(len(features))])
    pipeline.close()
    assert pipeline.calls == 1 and pipeline.items == len(features)
    for i, (context, probs, batch) in enumerate(results):
        assert batch == len(features)
        assert context == i and len(probs) == 1
        np.testing.assert_allclose(probs[0], alone[i], rtol=1e-5, atol=1e-6)


def test_batches_are_split_at_max_batch_and_multi_input_jobs_stay_whole(served):
    predictor = Predictor(served, threads=1, max_batch=1, max_audio_seconds=600)
    features = [predictor.prepare(p.read_bytes(), p.name)[1] for p in sorted((BUNDLED / "wav").glob("0[89]a0*.flac"))[:7]]
    alone = [served.predict(f[None])[0] for f in features]
    pipeline = BatchingPipeline(served.predict, threads=1, max_batch=3)
    # Jobs of 1, 4 (more than a batch: one job, several model calls) and 2 inputs.
    results = _queued_together(pipeline, [lambda: ("a", features[:1]), lambda: ("b", features[1:5]),
                                          lambda: ("c", features[5:])])
    pipeline.close()
    assert [answer.context for answer in results] == ["a", "b", "c"]
    got = [p for answer in results for p in answer.probabilities]
    assert len(got) == 7 and pipeline.items == 7
    for a, b in zip(alone, got):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_failing_request_gets_its_error_and_the_others_their_answers(served):
    predictor = Predictor(served, threads=1, max_batch=32, max_audio_seconds=600)
    features = predictor.prepare(CLIP.read_bytes(), CLIP.name)[1]

    def broken():
        raise ValueError("not audio")

    pipeline = BatchingPipeline(served.predict, threads=1, max_batch=32)
    results = _queued_together(pipeline, [lambda: (0, [features]), broken, lambda: (2, [features])])
    assert isinstance(results[1], ValueError) and str(results[1]) == "not audio"
    np.testing.assert_allclose(results[0][1][0], results[2][1][0], rtol=1e-5, atol=1e-7)
    pipeline.close()

    def failing_model(batch):
        raise RuntimeError("model failed")

    pipeline = BatchingPipeline(failing_model, threads=2, max_batch=32)
    results = _queued_together(pipeline, [lambda: (0, [features]), lambda: (1, [features])])
    assert all(isinstance(r, RuntimeError) for r in results)
    # The pipeline keeps working after both kinds of failure.
    pipeline._predict = served.predict
    assert len(_queued_together(pipeline, [lambda: (0, [features])])[0][1]) == 1
    pipeline.close()


def test_concurrent_requests_get_the_answers_they_get_alone(served):
    clips = [p.read_bytes() for p in sorted((BUNDLED / "wav").glob("1[34]a0*.flac"))[:8]]

    async def scenario():
        predictor = Predictor(served, threads=2, max_batch=32, max_audio_seconds=600)
        alone = [(await predictor.predict(c)).probabilities for c in clips]
        together = await asyncio.gather(*[predictor.predict(c) for c in clips])
        await predictor.aclose()
        return alone, [t.probabilities for t in together]

    alone, together = asyncio.run(scenario())
    for a, b in zip(alone, together):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_service(port: int, **settings: str) -> subprocess.Popen:
    """``python -m app`` on ``port``; returns once /health/ready answers 200 and, with several workers on Linux,
    once every worker listens (its output: the process's stdout). Each worker opens its own socket only after
    loading the model, and connections made before the last one listens all go to the ones already up."""
    env = {**os.environ, "SER_PORT": str(port), "SER_HOST": "127.0.0.1", "SER_LOG_LEVEL": "warning", **settings}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the launcher makes a fresh one for several workers
    proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    workers = int(settings.get("SER_WORKERS", "1"))
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, proc.stdout.read().decode()
        try:
            if (httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200
                    and (not sys.platform.startswith("linux") or _listening(port) >= workers)):
                return proc
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "service not ready in 180 s"
        time.sleep(0.5)


def test_uvicorn_process_over_real_http():
    port = _free_port()
    proc = _start_service(port)
    base = f"http://127.0.0.1:{port}"
    try:
        r = httpx.post(f"{base}/predict", files={"file": ("clip.wav", clip_as(), "audio/wav")}, timeout=30)
        assert r.status_code == 200 and sum(r.json()["probabilities"].values()) == pytest.approx(1, abs=1e-5)
        r = httpx.post(f"{base}/predict", files={"file": ("x.txt", b"hello", "text/plain")}, timeout=30)
        assert r.status_code == 415 and r.json()["code"] == "unsupported_audio"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _listening(port: int) -> int:
    """How many sockets listen on local TCP ``port`` (from /proc)."""
    return sum(1 for table in ("/proc/net/tcp", "/proc/net/tcp6") for line in Path(table).read_text().splitlines()[1:]
               if int(line.split()[1].rsplit(":", 1)[1], 16) == port and line.split()[3] == "0A")


def _sockets_by_process(port: int, pids: list[int], state: str) -> dict[int, set[str]]:
    """The TCP sockets on local ``port`` in ``state`` ("0A" listening, "01" established) that each process holds,
    as socket inodes (from /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
                inodes.add(fields[9])
    held = {}
    for pid in pids:
        links = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                links.add(os.readlink(fd))
            except OSError:
                pass
        held[pid] = {link[8:-1] for link in links if link.startswith("socket:[") and link[8:-1] in inodes}
    return held


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT balancing and /proc are Linux's")
def test_each_worker_listens_on_its_own_socket_and_stops_with_the_parent():
    """uvicorn's workers share one listening socket, and a burst of keep-alive connections can all land on one
    worker (benchmarks/README.md); here each worker listens on its own SO_REUSEPORT socket and the kernel
    spreads the connections. Both workers answer, and none outlives the parent."""
    port = _free_port()
    proc = _start_service(port, SER_WORKERS="2")
    clients = []
    try:
        deadline = time.monotonic() + 120
        while True:  # /health answers as soon as the first worker is up
            children = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
                        and _parent_pid(int(p.name)) == proc.pid]
            listening = {pid: inodes for pid, inodes in _sockets_by_process(port, children, "0A").items() if inodes}
            if len(listening) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert len(listening) == 2, f"expected two listening workers: {listening}"
        a, b = listening.values()
        assert len(a) == len(b) == 1 and a != b, f"the workers share a listening socket: {listening}"
        # A burst, as when a load balancer or a connection pool starts: all connect before any is used.
        clients = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(32)]
        for client in clients:
            client.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        for client in clients:
            assert client.recv(65536).startswith(b"HTTP/1.1 200")
        held = {pid: len(inodes) for pid, inodes in _sockets_by_process(port, list(listening), "01").items()}
        assert sum(held.values()) == 32 and min(held.values()) > 0, f"connections per worker: {held}"
        r = httpx.post(f"http://127.0.0.1:{port}/predict", files={"file": ("clip.wav", clip_as(), "audio/wav")},
                       timeout=30)
        assert r.status_code == 200 and r.json()["model"]["version"]
    finally:
        for client in clients:
            client.close()
        proc.terminate()
        proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() and _parent_pid(pid) == proc.pid for pid in children):
        assert time.monotonic() < deadline, "workers outlived the parent"
        time.sleep(0.2)


def _parent_pid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def test_plan_windows_cover_the_audio():
    assert plan_windows(2.0, 3.0, 1.5) == [(0.0, 2.0)]
    assert plan_windows(6.0, 3.0, 1.5) == [(0.0, 3.0), (1.5, 4.5), (3.0, 6.0)]
    windows = plan_windows(10.2, 3.0, 1.5)
    assert windows[0][0] == 0.0 and windows[-1] == (7.2, 10.2), "the last window ends at the end"
    assert all(b - a == pytest.approx(3.0) for a, b in windows)


def long_recording(seconds: float = 12.0) -> bytes:
    """Real speech: bundled clips of several emotions played one after another."""
    parts, total = [], 0.0
    for path in sorted((BUNDLED / "wav").glob("03a0[1-5]*.flac")):
        y, sr = sf.read(path, dtype="float32")
        parts.append(y)
        total += len(y) / sr
        if total >= seconds:
            break
    return wav_bytes(np.concatenate(parts)[: int(seconds * 16000)], 16000)


def test_long_audio_gets_a_timeline_and_an_overall_answer(client, served):
    data = long_recording(12.0)
    span = served.serving["span_seconds"]
    r = client.post("/predict?timeline=true", files={"file": ("long.wav", data, "audio/wav")})
    assert r.status_code == 200, r.text
    body = r.json()
    timeline = body["timeline"]
    assert body["audio"]["duration"] == pytest.approx(12.0)
    assert timeline[0]["start"] == 0.0 and timeline[-1]["end"] == pytest.approx(12.0)
    assert all(t["end"] - t["start"] == pytest.approx(served.serving["window_seconds"]) for t in timeline)
    for t in timeline:
        assert list(t["probabilities"]) == served.labels
        assert sum(t["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    if 12.0 > span:  # longer than one pass: the overall answer is the mean over the windows
        assert body["windows"] == len(timeline)
        mean = np.mean([list(t["probabilities"].values()) for t in timeline], axis=0)
        np.testing.assert_allclose(list(body["probabilities"].values()), mean, rtol=1e-5, atol=1e-6)
    # Without the flag: the same overall answer, no timeline.
    plain = client.post("/predict", files={"file": ("long.wav", data, "audio/wav")}).json()
    assert plain["timeline"] is None
    np.testing.assert_allclose(list(plain["probabilities"].values()), list(body["probabilities"].values()),
                               rtol=1e-5, atol=1e-6)


def test_timeline_window_and_hop_are_validated(client):
    data = long_recording(8.0)
    r = client.post("/predict?timeline=true&window=2&hop=1", files={"file": ("a.wav", data, "audio/wav")})
    assert r.status_code == 200 and len(r.json()["timeline"]) == 7
    r = client.post("/predict?timeline=true&window=2&hop=3", files={"file": ("a.wav", data, "audio/wav")})
    assert r.status_code == 422 and r.json()["code"] == "invalid_request"
    r = client.post("/predict?window=0.1", files={"file": ("a.wav", data, "audio/wav")})
    assert r.status_code == 422


@pytest.mark.parametrize("seconds", [1.0, 10.0])
def test_one_and_ten_seconds_of_speech(client, served, seconds):
    r = client.post("/predict", files={"file": ("speech.wav", long_recording(seconds), "audio/wav")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["audio"]["duration"] == pytest.approx(seconds)
    assert list(body["probabilities"]) == served.labels
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert body["windows"] == (1 if seconds <= served.serving["span_seconds"] else
                               len(plan_windows(seconds, served.serving["window_seconds"],
                                                served.serving["hop_seconds"])))


# ------------------------------------------------------------------------------------ speaker profiles

SPEAKER_08 = sorted((BUNDLED / "wav").glob("08*.flac"))


@pytest.fixture(scope="module")
def profiled(reference_model):
    """A service whose model reads each clip relative to a speaker reference, so it takes profiles."""
    with TestClient(create_app(Settings(model_path=reference_model))) as c:
        yield c, ExportedModel.load(reference_model)


def make_profile(client, paths) -> dict:
    r = client.post("/profile", files=[("files", (p.name, p.read_bytes(), "audio/flac")) for p in paths])
    assert r.status_code == 200, r.text
    return r.json()


def test_the_reference_model_uses_speaker_profiles(profiled):
    assert profiled[1].features.uses_reference, "these tests need a model whose features take a speaker reference"


def test_profile_is_the_speakers_mean_spectrum_and_predict_uses_it(profiled):
    client, served = profiled
    from speech_emotion.profiles import SpeakerProfile

    paths = SPEAKER_08[:12]
    body = make_profile(client, paths)
    profile = body["profile"]
    expected = SpeakerProfile.from_features([extract_one(str(p), served.features) for p in paths], served.features)
    np.testing.assert_allclose(profile["mean"], expected.mean, atol=2e-6)
    assert (profile["clips"], profile["frames"]) == (12, expected.frames)
    assert profile["features"] == served.features.base_fingerprint()
    assert body["seconds"] == pytest.approx(expected.frames * 0.01, abs=0.01)
    assert body["model"] == {"name": served.name, "version": served.version}

    clip = SPEAKER_08[20]
    alone = client.post("/predict", files={"file": (clip.name, clip.read_bytes())}).json()
    r = client.post("/predict", files={"file": (clip.name, clip.read_bytes())}, data={"profile": json.dumps(profile)})
    assert r.status_code == 200, r.text
    with_profile = r.json()
    whole_answer = client.post("/predict", files={"file": (clip.name, clip.read_bytes())}, data={"profile": json.dumps(body)})
    assert whole_answer.json()["probabilities"] == with_profile["probabilities"], "the whole /profile answer works too"
    assert with_profile["profile"] == {"clips": 12, "frames": expected.frames} and alone["profile"] is None
    base = extract_one(str(clip), served.features)
    want = served.predict(served.features.finish(base, np.asarray(profile["mean"], np.float32))[None])[0]
    np.testing.assert_allclose(list(with_profile["probabilities"].values()), want, rtol=1e-4, atol=1e-5)
    assert not np.allclose(list(with_profile["probabilities"].values()), list(alone["probabilities"].values()),
                           atol=1e-3), "the profile should change the answer"


def test_a_timeline_uses_the_profile_in_every_window(profiled):
    client, _ = profiled
    profile = make_profile(client, SPEAKER_08[:5])["profile"]
    data = long_recording(6.0)  # speaker 03's clips: any profile is accepted, it is the client's choice
    q = "/predict?timeline=true&window=2&hop=2"
    a = client.post(q, files={"file": ("a.wav", data)}).json()
    b = client.post(q, files={"file": ("a.wav", data)}, data={"profile": json.dumps(profile)}).json()
    assert len(a["timeline"]) == len(b["timeline"]) == 3
    for x, y in zip(a["timeline"], b["timeline"]):
        assert not np.allclose(list(x["probabilities"].values()), list(y["probabilities"].values()), atol=1e-4)


@pytest.mark.parametrize("text,message", [
    ("{not json", "not JSON"),
    ("[1, 2]", "JSON object"),
    ('{"mean": [0.1], "frames": 10, "clips": 1}', "lacks features"),
])
def test_bad_profiles_are_422(profiled, text, message):
    client, _ = profiled
    r = client.post("/predict", files={"file": ("a.wav", clip_as())}, data={"profile": text})
    assert r.status_code == 422 and r.json()["code"] == "invalid_profile"
    assert message in r.json()["detail"]


def test_a_profile_from_other_feature_settings_is_refused(profiled):
    client, _ = profiled
    profile = make_profile(client, SPEAKER_08[:2])["profile"]
    r = client.post("/predict", files={"file": ("a.wav", clip_as())},
                    data={"profile": json.dumps({**profile, "features": "0" * 16})})
    assert r.status_code == 422 and "POST /profile" in r.json()["detail"]


def test_profile_errors_name_the_clip(profiled):
    client, _ = profiled
    good = SPEAKER_08[0]
    files = [("files", (good.name, good.read_bytes())), ("files", ("notes.txt", b"not audio at all"))]
    r = client.post("/profile", files=files)
    assert r.status_code == 415 and r.json()["code"] == "unsupported_audio" and "notes.txt" in r.json()["detail"]
    short = wav_bytes(tone(0.1, 16000), 16000)
    r = client.post("/profile", files=[("files", (good.name, good.read_bytes())), ("files", ("blip.wav", short))])
    assert r.status_code == 422 and r.json()["code"] == "audio_too_short" and "blip.wav" in r.json()["detail"]
    r = client.post("/profile", files=[("files", ("empty.wav", b""))])
    assert r.status_code == 400 and r.json()["code"] == "empty_file"
    r = client.post("/profile", data={"x": "1"})
    assert r.status_code == 400 and r.json()["code"] == "missing_file"
    r = client.post("/profile", files=[("files", (good.name, good.read_bytes()))] * 101)
    assert r.status_code == 422 and r.json()["code"] == "too_many_files"


def test_models_without_a_speaker_reference_refuse_profiles():
    seed_model = MODELS / "emotion" / "1"  # the notebook's recipe: mean MFCCs
    with TestClient(create_app(Settings(model_path=seed_model))) as c:
        r = c.post("/profile", files=[("files", (CLIP.name, CLIP.read_bytes()))])
        assert r.status_code == 422 and r.json()["code"] == "profiles_unsupported"
        r = c.post("/predict", files={"file": ("a.wav", clip_as())}, data={"profile": "{}"})
        assert r.status_code == 422 and r.json()["code"] == "profiles_unsupported"
        assert c.post("/predict", files={"file": ("a.wav", clip_as())}).status_code == 200


def test_the_default_model_is_shippable_and_says_how_it_holds_up(served):
    """The bundled default model: trained only on redistributable data (EMO-DB, CC0), on speech only, with the
    in-corpus, cross-corpus and robustness figures its own training run measured in its metadata."""
    training = served.metadata.training
    assert [(c["name"], c["licence"]) for c in training["corpora"]] == [("emodb", "CC0-1.0")]
    assert training["redistributable"] is True
    assert served.features.speech is not None, "the default model reads speech only"
    evaluation = served.metadata.evaluation
    assert evaluation["protocol"] == "loso" and evaluation["speaker_independent"]
    (cross,) = evaluation["cross_corpus"]
    assert cross["corpus"] == "tess" and len(cross["emotions"]) == 6 and 0 <= cross["metrics"]["uar"] <= 1
    conditions = evaluation["robustness"]["conditions"]
    assert set(conditions) >= {"silence-1s", "white-20dB", "white-10dB", "babble-20dB", "babble-10dB", "reverb",
                               "telephone", "mp3-64k"}
