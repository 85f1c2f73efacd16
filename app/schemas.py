"""Response bodies, declared so that Swagger (/docs) shows every field with an example."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ModelRef(BaseModel):
    name: str = Field(description="model name (the folder under models/)")
    version: int = Field(description="model version (the numbered folder)")


class AudioSummary(BaseModel):
    duration: float = Field(description="length of the uploaded audio in seconds, as received")
    sample_rate: int = Field(description="sample rate of the upload in Hz, as received (resampled internally)")
    channels: int = Field(description="channels of the upload (averaged to mono internally)")
    format: str = Field(description="container detected from the content, e.g. WAV, FLAC, OGG, AIFF")


class TimelineSegment(BaseModel):
    start: float = Field(description="window start, seconds from the beginning of the audio")
    end: float = Field(description="window end, seconds")
    speech: bool = Field(True, description="false when the window holds no speech: it has no emotion and is left "
                                           "out of the overall answer")
    emotion: str | None = Field(None, description="the most probable emotion in this window (null without speech)")
    probability: float | None = Field(None, description="its probability")
    probabilities: dict[str, float] | None = Field(None, description="every label's probability in this window")


class ProfileRef(BaseModel):
    clips: int = Field(description="clips the speaker profile was made from")
    frames: int = Field(description="feature frames it averages (10 ms each)")


class SpeakerProfileBody(BaseModel):
    mean: list[float] = Field(description="the speaker's mean log-mel spectrum, one value per mel bin")
    frames: int = Field(description="feature frames averaged (10 ms each)")
    clips: int = Field(description="clips averaged")
    features: str = Field(description="fingerprint of the feature settings it is valid for")


class ProfileResponse(BaseModel):
    profile: SpeakerProfileBody = Field(description="send this object's JSON as the form field `profile` of "
                                                    "POST /predict")
    seconds: float = Field(description="seconds of audio the profile averages")
    model: ModelRef

    model_config = ConfigDict(json_schema_extra={"example": {
        "profile": {"mean": [0.41, 0.52, "... 64 values"], "frames": 5130, "clips": 20,
                    "features": "3f2a9c0d1e7b4a55"},
        "seconds": 51.3,
        "model": {"name": "emotion", "version": 6},
    }})


class PredictResponse(BaseModel):
    emotion: str = Field(description="the most probable emotion")
    probability: float = Field(description="its probability, 0-1")
    probabilities: dict[str, float] = Field(
        description="every label's probability, keys in the model's label order (see GET /model); sums to 1"
    )
    audio: AudioSummary
    model: ModelRef
    windows: int = Field(
        1, description="1 when the whole clip was analysed in one pass; for audio longer than the model's span "
                       "(GET /model: serving.span_seconds) the overall answer is the mean over this many windows "
                       "(those with speech)",
    )
    speech_seconds: float = Field(
        description="seconds of speech found in the upload; silence and noise around and between it are not "
                    "analysed (models with a speech detector, GET /model: features.speech)",
    )
    timeline: list[TimelineSegment] | None = Field(
        None, description="with ?timeline=true: the probabilities of each window of the audio, in time order",
    )
    profile: ProfileRef | None = Field(
        None, description="the speaker profile the clip was heard with, when one was sent",
    )

    model_config = ConfigDict(json_schema_extra={"example": {
        "emotion": "angry",
        "probability": 0.87,
        "probabilities": {"angry": 0.87, "disgust": 0.02, "fear": 0.03, "happy": 0.07, "neutral": 0.0,
                          "sad": 0.01},
        "audio": {"duration": 2.61, "sample_rate": 16000, "channels": 1, "format": "WAV"},
        "model": {"name": "emotion", "version": 7},
        "windows": 1,
        "speech_seconds": 2.31,
    }})


class HealthResponse(BaseModel):
    status: str = Field(description="'ok' when a model is loaded and warmed up, 'unavailable' otherwise")
    model: ModelRef | None = Field(None, description="the served model, when ready")
    reason: str | None = Field(None, description="why the service is not ready, when it is not")

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"status": "ok", "model": {"name": "emotion", "version": 1}},
        {"status": "unavailable", "reason": "no SavedModel under /app/models (expected <name>/<version>/...)"},
    ]})


class ModelInfo(BaseModel):
    """The served model's metadata.json: what it predicts, from which features, trained and measured how."""

    name: str
    version: int
    labels: list[str] = Field(description="output labels, in the order of the model's probabilities")
    features: dict[str, Any] = Field(description="feature settings the service applies to uploads")
    training: dict[str, Any] = Field(description="training corpus, speakers, emotions, final fit, settings")
    evaluation: dict[str, Any] = Field(description="evaluation protocol (speaker-independent or not) and its "
                                                   "metrics: accuracy, UAR, macro F1")
    serving: dict[str, float] = Field(description="long audio: span_seconds analysed in one pass; longer audio "
                                                 "is cut into windows of window_seconds every hop_seconds")
    versions: dict[str, str] = Field(description="library versions the model was exported with")
    created: str = Field(description="export time (UTC, ISO 8601)")
    path: str = Field(description="folder the model was loaded from")

    model_config = ConfigDict(extra="allow")


class ErrorResponse(BaseModel):
    detail: str = Field(description="what was wrong, and what to do about it")
    code: str = Field(description="machine-readable error code, e.g. unsupported_audio, payload_too_large")


#: One example body per error code, so that each documented status shows its own errors (OpenAPI examples).
ERROR_EXAMPLES: dict[str, str] = {
    "missing_file": "no file uploaded: send the audio as multipart/form-data in a field named 'file', e.g. "
                    "curl -F file=@clip.wav http://localhost:8000/predict",
    "empty_file": "'clip.wav' is empty (0 bytes)",
    "unauthorized": "an API key is required: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
    "payload_too_large": "request body exceeds the 25 MB limit (SER_MAX_UPLOAD_MB)",
    "audio_too_long": "clip.wav: 912.4 s of audio; the limit is 600 s (SER_MAX_AUDIO_SECONDS)",
    "unsupported_audio": "'notes.txt' is not decodable audio (Format not recognised). Send WAV, FLAC, OGG, AIFF "
                         "or MP3.",
    "no_speech": "'clip.wav': no speech found in the audio (0.00 s of speech-like sound in 3.00 s; at least "
                 "0.25 s needed): silence, noise or a click holds no emotion to recognise",
    "audio_too_short": "'clip.wav' is too short to analyse: the audio holds 0.050 s of audio, at least 0.25 s are "
                       "needed",
    "invalid_request": "hop (4 s) must not exceed window (3 s)",
    "invalid_profile": "the form field 'profile' is not JSON (Expecting value); send the 'profile' object of a "
                       "POST /profile answer",
    "profiles_unsupported": "model emotion version 1 does not use speaker profiles (GET /model: "
                            "features.reference is not 'speaker'); POST /predict the audio alone",
    "too_many_files": "101 files; a profile takes at most 100",
    "model_unavailable": "no model loaded: FileNotFoundError: no SavedModel under /app/models",
    "overloaded": "the service is at capacity (64 requests in progress in this worker, SER_MAX_QUEUE): retry "
                  "after 1 s",
    "timeout": "processing took longer than 30 s (SER_REQUEST_TIMEOUT_S): retry after 1 s",
}


def error_response(description: str, *codes: str) -> dict:
    """A ``responses=`` entry: the error body's schema and one example per code the status can carry."""
    return {"model": ErrorResponse, "description": description, "content": {"application/json": {"examples": {
        code: {"summary": code, "value": {"detail": ERROR_EXAMPLES[code], "code": code}} for code in codes}}}}


#: What any route behind the back-pressure limit (POST /predict, /profile) can answer with 503.
UNAVAILABLE = error_response("no model loaded (model_unavailable, see GET /health); the worker's queue is full "
                             "(overloaded) or processing took longer than SER_REQUEST_TIMEOUT_S (timeout): "
                             "both with Retry-After", "model_unavailable", "overloaded", "timeout")
