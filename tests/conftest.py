"""Shared fixtures: real bundled audio, generated audio files, and the optional ../shared corpora."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "data" / "emodb"
SHARED = Path(os.environ.get("SER_SHARED_DATASETS", ROOT.parent / "shared" / "datasets"))


def tone(seconds: float = 1.0, sr: int = 16000, freq: float = 220.0, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A voiced-like signal: a harmonic tone with vibrato and a little noise, shape (frames, channels)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = freq * (1 + 0.03 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    y = sum(np.sin(k * phase) / k for k in range(1, 6)) * 0.2 * (0.6 + 0.4 * np.sin(np.pi * t / max(seconds, 1e-3)))
    y = y + 0.01 * rng.standard_normal(len(t))
    out = np.stack([y * (0.9 ** c) for c in range(channels)], axis=1)
    return out.astype(np.float32)


def speech(seconds: float = 1.0, sr: int = 16000, channels: int = 1, start: int = 0) -> np.ndarray:
    """Real speech: bundled EMO-DB clips end to end (from the ``start``-th file), cut to ``seconds``,
    resampled to ``sr``; shape (frames, channels), the channels at falling gain."""
    from speech_emotion.features import resample

    files = sorted((BUNDLED / "wav").glob("*.flac"))
    parts, total, k = [], 0, start
    while total < seconds * 16000:
        y, file_sr = sf.read(files[k % len(files)], dtype="float32")
        parts.append(resample(y, file_sr, 16000))
        total += len(parts[-1])
        k += 1
    y = resample(np.concatenate(parts)[: int(seconds * 16000)], 16000, sr)
    return np.stack([y * (0.9 ** c) for c in range(channels)], axis=1).astype(np.float32)


def write_audio(path: Path, seconds: float = 1.0, sr: int = 16000, *, channels: int = 1, freq: float = 220.0,
                format: str | None = None, subtype: str | None = None, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(seconds, sr, freq, channels, seed), sr, format=format, subtype=subtype)
    return path


@pytest.fixture
def make_audio():
    return write_audio


@pytest.fixture(scope="session")
def bundled_files() -> list[Path]:
    files = sorted((BUNDLED / "wav").glob("*.flac"))
    assert len(files) == 535, "the bundled EMO-DB should hold 535 FLAC files"
    return files


def shared_corpus(name: str) -> Path:
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"{path} not present (the ../shared datasets are only on development machines)")
    return path


@pytest.fixture(scope="session")
def reference_model(tmp_path_factory) -> Path:
    """A model whose features take a speaker reference (so it takes speaker profiles), with speech detection:
    trained here in about a minute on three bundled speakers, one epoch, a small network. The shipped
    default reads each clip on its own; the profile tests need the mechanics, not accuracy."""
    import csv

    from training.cli import main
    from training.corpora import load_corpus

    root = tmp_path_factory.mktemp("reference")
    rows = [(u.path, u.emotion, u.speaker) for u in load_corpus(BUNDLED).utterances if u.speaker in ("03", "08", "11")]
    with (root / "slice.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("path", "emotion", "speaker"), *rows])
    argv = ["train", "--data", str(root / "slice.csv"), "--recipe", "crnn-speaker", "--features", "logmel-robust",
            "--protocol", "speaker", "--test-speakers", "11", "--epochs", "1", "--model-arg", "lstm_units=16",
            "--runs-dir", str(root / "runs"), "--cache-dir", str(root / "cache"), "--models-dir",
            str(root / "models"), "--export", "reference"]
    assert main(argv) == 0
    return root / "models" / "reference" / "1"
