"""Speech detection (speech_emotion/speech.py) on real audio: what it keeps, what it refuses, and the service's use
of it (no_speech, timeline windows without speech, speech seconds)."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.conftest import BUNDLED, ROOT, speech
from speech_emotion.audio import Audio, read_audio
from speech_emotion.features import FEATURE_SETS, LogMelFrames, settings_from_dict
from speech_emotion.speech import DEFAULT_DETECTOR, NoSpeechError, SpeechDetector

SR = 16000
CLIP = BUNDLED / "wav" / "03a01Fa.flac"  # speaker 03, happy, 1.9 s


def clip() -> np.ndarray:
    return read_audio(CLIP).samples


def click(seconds: float = 3.0) -> np.ndarray:
    y = np.zeros(int(seconds * SR), np.float32)
    n = int(0.05 * SR)
    y[SR: SR + n] = 0.8 * np.hanning(n) * np.sin(np.arange(n) * 0.9)
    return y


def noise(seconds: float = 3.0, level: float = 0.05, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * SR)) * level).astype(np.float32)


def pad(y: np.ndarray, before: float = 1.0, after: float = 1.0, level: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal(int(before * SR)) * level).astype(np.float32)
    b = (rng.standard_normal(int(after * SR)) * level).astype(np.float32)
    return np.concatenate([a, y, b])


def test_speech_of_a_clip_is_kept_and_padding_removed():
    y = clip()
    kept = DEFAULT_DETECTOR.keep(y, SR)
    assert 0.8 * len(y) <= len(kept) <= len(y)
    for level in (0.0, 1e-3):  # digital silence, then a -60 dBFS noise floor
        padded = pad(y, level=level)
        trimmed = DEFAULT_DETECTOR.keep(padded, SR)
        # 2 s of padding go, apart from the margins kept around speech
        assert abs(len(trimmed) - len(kept)) <= 2 * DEFAULT_DETECTOR.margin * SR + 0.05 * SR, level


@pytest.mark.parametrize("what", ["silence", "white noise", "low noise", "click"])
def test_no_speech_in_silence_noise_or_a_click(what):
    y = {"silence": np.zeros(3 * SR, np.float32), "white noise": noise(), "low noise": noise(level=1e-3),
         "click": click()}[what]
    with pytest.raises(NoSpeechError, match="no speech"):
        DEFAULT_DETECTOR.keep(y, SR)
    assert DEFAULT_DETECTOR.speech_seconds(y, SR) < DEFAULT_DETECTOR.min_speech


def test_quiet_speech_is_found_as_at_full_level():
    y = clip()
    loud = DEFAULT_DETECTOR.speech_seconds(y, SR)
    as_read = dataclasses.replace(DEFAULT_DETECTOR, level_db=None)  # WebRTC on the recording's own level
    for db in (-20, -30, -40):
        quiet = y * np.float32(10 ** (db / 20))
        assert DEFAULT_DETECTOR.speech_seconds(quiet, SR) >= 0.9 * loud, db
        assert len(DEFAULT_DETECTOR.keep(quiet, SR)) == pytest.approx(len(DEFAULT_DETECTOR.keep(y, SR)), rel=0.1)
    # what the level setting is for: read as it is, 40 dB down, WebRTC hears under half of the speech
    assert as_read.speech_seconds(y * np.float32(0.01), SR) < 0.5 * loud


@pytest.mark.parametrize("what", ["dither", "quiet noise", "quiet click"])
def test_near_silence_stays_without_speech_when_brought_up(what):
    y = {"dither": noise(level=3e-5), "quiet noise": noise(level=1e-3, seed=1),
         "quiet click": click() * np.float32(1e-3)}[what]
    with pytest.raises(NoSpeechError):
        DEFAULT_DETECTOR.keep(y, SR)


def test_long_pauses_inside_are_shortened():
    y = clip()
    gap = 1.5
    joined = np.concatenate([y, np.zeros(int(gap * SR), np.float32), y])
    kept = DEFAULT_DETECTOR.keep(joined, SR)
    alone = DEFAULT_DETECTOR.keep(y, SR)
    # both utterances stay, the 1.5 s pause between them is cut to about max_pause
    assert len(kept) >= 2 * len(alone) - 0.05 * SR
    assert len(kept) <= 2 * len(alone) + (DEFAULT_DETECTOR.max_pause + 0.25) * SR
    assert len(kept) < len(joined) - 0.6 * gap * SR


def test_detector_settings_round_trip_through_feature_metadata():
    features = FEATURE_SETS["logmel-speaker-vad"]
    data = features.to_dict()
    assert data["speech"]["kind"] == "webrtc"
    again = settings_from_dict(data)
    assert again == features and again.fingerprint() == features.fingerprint()
    assert isinstance(again.speech, SpeechDetector)
    # a feature set without a detector (models trained before it) reads every sample, as before
    assert settings_from_dict(FEATURE_SETS["logmel-speaker"].to_dict()).speech is None
    with pytest.raises(ValueError, match="unknown speech detector settings"):
        settings_from_dict({**data, "speech": {**data["speech"], "bogus": 1}})
    # a detector saved before the level setting reads audio at its own level, and is written as it was
    before = {k: v for k, v in data["speech"].items() if k not in ("level_db", "max_gain_db")}
    assert data["speech"]["level_db"] == DEFAULT_DETECTOR.level_db is not None
    assert SpeechDetector.from_dict(before).level_db is None
    assert SpeechDetector.from_dict(before).to_dict() == before


def test_features_on_speech_only_are_the_same_with_padding_around():
    features = FEATURE_SETS["logmel-speaker-vad"]
    plain = LogMelFrames(reference="speaker")
    y = clip()
    alone = features.extract(Audio(y, SR, 1))
    padded = features.extract(Audio(pad(y, level=1e-3), SR, 1))
    # without speech detection, a second of noise either side adds 200 frames; with it, only the margins
    assert plain.extract(Audio(pad(y), SR, 1)).shape[0] >= alone.shape[0] + 190
    assert abs(padded.shape[0] - alone.shape[0]) <= 25
    # and the utterance-level statistics the model sees barely move
    assert np.abs(padded[:, :64].mean(axis=0) - alone[:, :64].mean(axis=0)).mean() < 0.15
    with pytest.raises(NoSpeechError):
        features.extract(Audio(np.zeros(2 * SR, np.float32), SR, 1))


def test_the_service_reads_a_48k_stereo_upload_as_training_reads_the_file(reference_model):
    """Analyser resamples a clip once, for the detector, and hands that signal to the features: the model input
    must be the one the training's feature path computes from the clip itself, to the last bit."""
    from speech_emotion.audio import resample
    from speech_emotion.model import ExportedModel
    from speech_emotion.predict import Analyser
    from speech_emotion.profiles import SpeakerProfile

    model = ExportedModel.load(ROOT / "models" / "emotion", graph=False)
    assert model.features.reads_mono_16k
    y = resample(clip(), SR, 48000)
    stereo = Audio(np.stack([y, 0.5 * np.roll(y, 7)], axis=1).astype(np.float32), 48000, 2)
    analyser = Analyser(model)
    for audio in (stereo, Audio(clip(), SR, 1)):
        inputs = analyser.prepare(audio).inputs
        assert len(inputs) == 1 and np.array_equal(inputs[0], model.features.extract(audio))
        assert np.array_equal(analyser.clip_features(audio), inputs[0])

    # ... and a speaker's profile from such a clip is the one training's features make
    model = ExportedModel.load(reference_model, graph=False)
    profile = Analyser(model).profile([(stereo, "a.wav")])
    assert np.array_equal(profile.mean, SpeakerProfile.from_features([model.features.base(stereo)], model.features).mean)


def test_a_48k_stereo_recordings_timeline_windows_are_cut_from_its_16k_copy():
    """A timeline's windows are cut from the signal the features read (the detector's mono 16 kHz copy), not
    each resampled again from the upload: the same window inputs as the recording sent as that copy, to the
    last bit (a window resampled on its own differs at its edges)."""
    from speech_emotion.audio import resample
    from speech_emotion.model import ExportedModel
    from speech_emotion.predict import Analyser

    analyser = Analyser(ExportedModel.load(ROOT / "models" / "emotion", graph=False))
    gap = np.zeros(SR // 2, np.float32)
    y = resample(np.concatenate([clip(), gap, clip(), gap, clip()]), SR, 48000)
    stereo = Audio(np.stack([y, 0.5 * np.roll(y, 7)], axis=1).astype(np.float32), 48000, 2)
    copy = analyser.detect(stereo).heard
    got, want = analyser.prepare(stereo, timeline=True), analyser.prepare(copy, timeline=True)
    assert len(got.spans) > 2 and got.spans == want.spans and got.speech == want.speech
    assert len(got.inputs) == len(want.inputs)
    assert all(np.array_equal(a, b) for a, b in zip(got.inputs, want.inputs))


# ----------------------------------------------------------------------------------------------- service


def wav(y: np.ndarray, sr: int = SR) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(Settings(model_path=ROOT / "models"))) as c:
        yield c


def post(client, data: bytes, name: str = "clip.wav", **params):
    return client.post("/predict", files={"file": (name, data, "audio/wav")}, params=params)


@pytest.mark.parametrize("what", ["silence", "noise", "click"])
def test_service_answers_no_speech_by_code(client, what):
    y = {"silence": np.zeros(3 * SR, np.float32), "noise": noise(), "click": click()}[what]
    r = post(client, wav(y), f"{what}.wav")
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["code"] == "no_speech" and f"{what}.wav" in body["detail"] and "no speech" in body["detail"]


def test_service_reports_speech_seconds(client):
    y = clip()
    r = post(client, wav(pad(y, level=1e-3)))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["audio"]["duration"] == pytest.approx(len(y) / SR + 2, abs=0.01)
    assert 0.5 * len(y) / SR <= body["speech_seconds"] <= len(y) / SR + 0.1


def test_padding_around_a_clip_barely_changes_the_answer(client):
    y = clip()
    alone = post(client, wav(y)).json()["probabilities"]
    for level in (0.0, 1e-3):
        padded = post(client, wav(pad(y, level=level))).json()["probabilities"]
        diff = max(abs(alone[k] - padded[k]) for k in alone)
        assert diff < 0.1, (level, alone, padded)


def test_a_quiet_recording_gets_the_answer_of_a_loud_one(client):
    y = clip()
    loud = post(client, wav(y)).json()
    for db in (-20, -30):
        r = post(client, wav(y * np.float32(10 ** (db / 20))))
        assert r.status_code == 200, r.text
        quiet = r.json()
        assert quiet["emotion"] == loud["emotion"], db
        assert max(abs(loud["probabilities"][k] - quiet["probabilities"][k]) for k in loud["probabilities"]) < 0.05
        assert quiet["speech_seconds"] == pytest.approx(loud["speech_seconds"], rel=0.1), db


def test_timeline_marks_the_window_without_speech(client):
    first, second = speech(4.0, start=0), speech(4.0, start=40)
    y = np.concatenate([first[:, 0], np.zeros(4 * SR, np.float32), second[:, 0]])  # 12 s: longer than the span
    r = post(client, wav(y), timeline="true", window=4, hop=4)
    assert r.status_code == 200, r.text
    body = r.json()
    marks = [(s["start"], s["speech"]) for s in body["timeline"]]
    assert marks == [(0.0, True), (4.0, False), (8.0, True)], marks
    middle = body["timeline"][1]
    assert middle["emotion"] is None and middle["probabilities"] is None
    speaking = [s for s in body["timeline"] if s["speech"]]
    assert all(s["probabilities"] for s in speaking)
    # the overall answer is the mean of the windows with speech; the silent one is left out
    assert body["windows"] == 2
    mean = np.mean([list(s["probabilities"].values()) for s in speaking], axis=0)
    np.testing.assert_allclose(list(body["probabilities"].values()), mean, rtol=1e-5, atol=1e-6)
    assert 5.5 <= body["speech_seconds"] <= 8.5


def test_profile_refuses_a_clip_without_speech_by_name(reference_model):  # a model that takes profiles
    good = sorted((BUNDLED / "wav").glob("08a0*.flac"))[0]
    with TestClient(create_app(Settings(model_path=reference_model))) as client:
        r = client.post("/profile", files=[("files", (good.name, good.read_bytes())),
                                           ("files", ("quiet.wav", wav(np.zeros(2 * SR, np.float32))))])
    assert r.status_code == 422 and r.json()["code"] == "no_speech" and "quiet.wav" in r.json()["detail"]
