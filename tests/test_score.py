"""Bulk scoring (``python -m speech_emotion score``) on real bundled recordings: the service's answers, one row
per recording in input order, errors by name, resuming after an interruption, timelines, CSV lists."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from speech_emotion import score as scoring
from speech_emotion.score import PARTIAL_SUFFIX, ScoreError, find_recordings, score
from tests.conftest import BUNDLED, ROOT
from tests.test_api import MODELS, long_recording

CLIPS = sorted((BUNDLED / "wav").glob("1[01]a0[12]*.flac"))


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """A folder as users have them: recordings in sub-folders, one corrupt file, one of silence, one long."""
    root = tmp_path_factory.mktemp("archive")
    for i, clip in enumerate(CLIPS):
        (root / f"day{i % 2}").mkdir(exist_ok=True)
        shutil.copy(clip, root / f"day{i % 2}" / clip.name)
    (root / "day0" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt nonsense")
    sf.write(root / "day1" / "silence.wav", np.zeros(32000, dtype=np.float32), 16000)
    (root / "long.wav").write_bytes(long_recording(12.0))
    (root / "notes.txt").write_text("not audio")
    return root


@pytest.fixture(scope="module")
def service():
    with TestClient(create_app(Settings(model_path=MODELS))) as client:
        yield client


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_a_folder_scores_like_the_service_one_row_per_recording(archive, service, tmp_path):
    out = tmp_path / "scores.csv"
    run = score([str(archive)], out, model=str(MODELS), jobs=2, chunk=3, progress=False)
    rows = read_rows(out)
    files = find_recordings([str(archive)])
    assert [r["path"] for r in rows] == files and len(files) == len(CLIPS) + 3, "every recording once, in order"
    assert not any(p.endswith("notes.txt") for p in files)
    assert run.scored == len(files) and run.resumed == 0 and run.failed == 2
    assert not out.with_name(out.name + PARTIAL_SUFFIX).exists()
    labels = service.get("/model").json()["labels"]
    assert list(rows[0]) == ["path", "emotion", "probability", *labels, "speech_seconds", "error"]
    for row in rows:
        name = Path(row["path"]).name
        answer = service.post("/predict", files={"file": (name, Path(row["path"]).read_bytes())})
        if name == "broken.wav":
            assert answer.status_code == 415 and row["emotion"] == "" and "broken.wav" in row["error"]
            continue
        if name == "silence.wav":
            assert answer.json()["code"] == "no_speech" and "no speech" in row["error"] and row["emotion"] == ""
            continue
        assert answer.status_code == 200 and row["error"] == ""
        expected = answer.json()
        assert row["emotion"] == expected["emotion"], name
        np.testing.assert_allclose([float(row[k]) for k in labels],
                                   [expected["probabilities"][k] for k in labels], atol=2e-5)
        assert float(row["speech_seconds"]) == pytest.approx(expected["speech_seconds"], abs=0.011)


def test_an_interrupted_run_resumes_without_redoing_finished_files(archive, tmp_path, monkeypatch):
    out = tmp_path / "scores.csv"
    real, calls = scoring.score_chunk, []

    def interrupted_after_two_chunks(paths, settings):
        calls.append(paths)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real(paths, settings)

    monkeypatch.setattr(scoring, "score_chunk", interrupted_after_two_chunks)
    with pytest.raises(KeyboardInterrupt):
        score([str(archive)], out, model=str(MODELS), jobs=1, chunk=3, progress=False)
    partial = out.with_name(out.name + PARTIAL_SUFFIX)
    assert not out.exists() and partial.exists()
    with partial.open("a") as f:
        f.write('{"path": "torn by a kil')  # a write cut short: dropped on resume
    monkeypatch.setattr(scoring, "score_chunk", real)

    seen = []
    monkeypatch.setattr(scoring, "score_chunk", lambda paths, settings: seen.extend(paths) or real(paths, settings))
    run = score([str(archive)], out, model=str(MODELS), jobs=1, chunk=3, progress=False)
    files = find_recordings([str(archive)])
    assert run.resumed == 6 and run.scored == len(files) - 6 and seen == files[6:], "only the rest is scored"
    fresh = tmp_path / "fresh.csv"
    score([str(archive)], fresh, model=str(MODELS), jobs=1, chunk=5, progress=False)
    assert_same_answers(read_rows(out), read_rows(fresh))


def assert_same_answers(rows: list[dict[str, str]], expected: list[dict[str, str]]) -> None:
    """The same rows, probabilities equal to their 6th decimal: runs with other chunk sizes batch the model's
    inputs otherwise, which moves a probability by float rounding and can round its last digit either way."""
    assert [[v for k, v in r.items() if not _numeric(k, v)] for r in rows] == \
        [[v for k, v in r.items() if not _numeric(k, v)] for r in expected]
    for row, other in zip(rows, expected):
        for k, v in row.items():
            if _numeric(k, v):
                assert float(v) == pytest.approx(float(other[k]), abs=1.5e-6), (row["path"], k)


def _numeric(key: str, value: str) -> bool:
    return key not in ("path", "emotion", "error", "speech_seconds") and value != ""


def test_a_partial_run_with_other_settings_is_not_mixed_in(archive, tmp_path):
    out = tmp_path / "scores.csv"
    out.with_name(out.name + PARTIAL_SUFFIX).write_text(json.dumps({"header": {"model": "other/1"}}) + "\n")
    with pytest.raises(ScoreError, match="other settings"):
        score([str(archive)], out, model=str(MODELS), jobs=1, progress=False)


def test_timelines_and_lists_of_recordings(archive, service, tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text("path,speaker\n" + f"{archive / 'long.wav'},x\n" + f"{CLIPS[0]},y\n")
    out = tmp_path / "timeline.csv"
    score([str(listing)], out, model=str(MODELS), jobs=1, timeline=True, progress=False)
    rows = read_rows(out)
    expected = service.post("/predict?timeline=true",
                            files={"file": ("long.wav", (archive / "long.wav").read_bytes())}).json()
    long_rows = [r for r in rows if r["path"].endswith("long.wav")]
    assert long_rows[0]["start"] == "" and long_rows[0]["emotion"] == expected["emotion"]
    windows = long_rows[1:]
    assert [(float(r["start"]), float(r["end"])) for r in windows] == [
        (s["start"], s["end"]) for s in expected["timeline"]]
    for row, segment in zip(windows, expected["timeline"]):
        assert (row["emotion"] or None) == segment.get("emotion")
    assert [r["path"] for r in rows if r["start"] == ""] == [str(archive / "long.wav"), str(CLIPS[0])]


def test_the_command_line_names_bad_input_and_exits_2(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "speech_emotion", "score", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)

    r = run(str(tmp_path / "nowhere"), "--output", str(tmp_path / "x.csv"))
    assert r.returncode == 2 and "nowhere: no such file or folder" in r.stderr
    r = run(str(CLIPS[0]), "--output", str(tmp_path / "x.json"))
    assert r.returncode == 2 and ".csv or .parquet" in r.stderr
    r = run(str(CLIPS[0]), str(CLIPS[1]), "--output", str(tmp_path / "two.csv"), "--no-progress", "--jobs", "1")
    assert r.returncode == 0, r.stderr
    assert "2 recordings scored" in r.stdout and len(read_rows(tmp_path / "two.csv")) == 2


def test_parquet_holds_the_same_rows(archive, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    score([str(CLIPS[0]), str(CLIPS[1])], tmp_path / "s.parquet", model=str(MODELS), jobs=1, progress=False)
    score([str(CLIPS[0]), str(CLIPS[1])], tmp_path / "s.csv", model=str(MODELS), jobs=1, progress=False)
    table = pq.read_table(tmp_path / "s.parquet").to_pylist()
    rows = read_rows(tmp_path / "s.csv")
    assert [t["path"] for t in table] == [r["path"] for r in rows]
    assert [t["emotion"] for t in table] == [r["emotion"] for r in rows]
    assert [t["probability"] for t in table] == [float(r["probability"]) for r in rows]


def test_on_a_local_ray_instance_the_rows_equal_the_local_run(archive, tmp_path, monkeypatch):
    """Ray tasks score the same chunks as local worker processes, each on one thread: the same rows, to the
    last digit, in the same order. "local" starts a Ray instance of its own even where RAY_ADDRESS names
    another (here one that does not answer), as on a node of a cluster."""
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")
    local, on_ray = tmp_path / "local.csv", tmp_path / "ray.csv"
    score([str(archive)], local, model=str(MODELS), jobs=2, chunk=4, timeline=True, progress=False)
    run = score([str(archive)], on_ray, model=str(MODELS), chunk=4, timeline=True, ray_address="local",
                progress=False)
    assert run.scored == len(find_recordings([str(archive)])) and run.failed == 2
    assert read_rows(on_ray) == read_rows(local)


def test_local_preparing_workers_yield_the_cores_to_the_model_process():
    """Local preparing workers run at a lower priority (os.nice) than the model's process; the initializer
    leaves a process's priority alone unless asked (Ray's workers, reused for other tasks)."""
    code = ("import os; from speech_emotion.score import _features_init, PREPARER_NICENESS; before = os.nice(0); "
            f"_features_init({str(MODELS)!r}); same = os.nice(0); "
            f"_features_init({str(MODELS)!r}, PREPARER_NICENESS); print(before, same, os.nice(0))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    before, same, after = map(int, r.stdout.split())
    assert scoring.PREPARER_NICENESS > 0
    assert same == before and after == min(19, before + scoring.PREPARER_NICENESS)


def test_preparing_workers_never_import_tensorflow(tmp_path):
    """The processes that decode and compute features start without TensorFlow (most of a worker's start-up
    and memory): only the one that makes the model calls loads it. Nor do they load scipy.signal or numba
    (librosa's filters import both: over a second of each worker's start)."""
    code = ("import sys; from speech_emotion.score import _features_init, prepare_chunk, ScoreSettings; "
            f"_features_init({str(MODELS)!r}); "
            f"rows = prepare_chunk([{str(CLIPS[0])!r}, 'missing.wav'], ScoreSettings(model={str(MODELS)!r})); "
            "assert rows[0][1].inputs[0].ndim == 2 and rows[0][1].audio is None, rows[0]; "
            "assert 'missing.wav' in rows[1][1], rows[1]; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'scipy.signal', 'numba') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
