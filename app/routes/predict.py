from __future__ import annotations

import json

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile

from app.deps import get_predictor
from app.errors import FORMATS, APIError
from app.inference import Predictor
from app.limits import within
from app.schemas import (UNAVAILABLE, AudioSummary, ModelRef, PredictResponse, ProfileRef, TimelineSegment,
                         error_response)
from speech_emotion.profiles import SpeakerProfile

router = APIRouter(tags=["prediction"])


@router.post(
    "/predict",
    response_model=PredictResponse,
    summary="Emotion probabilities for an audio clip",
    description="Upload one audio file as multipart/form-data in the field `file`. "
                f"Accepted: {FORMATS}. The audio is converted exactly as in training (mono, resampled, the "
                "model's feature settings; see GET /model) and the answer holds every label's probability.\n\n"
                "Long audio is never cropped: up to the model's span (GET /model: serving.span_seconds) the clip "
                "is analysed in one pass; longer audio is cut into overlapping windows and the overall answer is "
                "their mean. Add `?timeline=true` to get each window's probabilities too (`window` and `hop` "
                "in seconds choose the windows).\n\n"
                "Speaker profiles (models whose features use a speaker reference, GET /model: "
                "features.reference = 'speaker'): without a profile each clip is heard relative to itself; "
                "send the form field `profile` (the JSON answer of POST /profile, made from other clips of the "
                "same speaker, e.g. `curl -F 'profile=<profile.json'`) and it is heard relative to how that "
                "speaker usually sounds, which is more accurate across speakers (README, 'What accuracy to "
                "expect').",
    responses={
        400: error_response("no file, or an empty file", "missing_file", "empty_file"),
        413: error_response("body over SER_MAX_UPLOAD_MB, or audio over SER_MAX_AUDIO_SECONDS",
                            "payload_too_large", "audio_too_long"),
        415: error_response("not decodable audio", "unsupported_audio"),
        422: error_response("no speech in the audio (silence, noise, a click); audio too short to analyse; "
                            "window/hop out of range; a profile that is not valid for this model or a model "
                            "without profiles", "no_speech", "audio_too_short", "invalid_request",
                            "invalid_profile", "profiles_unsupported"),
        503: UNAVAILABLE,
    },
)
async def predict(  # FastAPI: each parameter is a field of the request (form, query) or a dependency
    request: Request,
    file: UploadFile = File(..., description=f"the audio file: {FORMATS}"),
    timeline: bool = Query(False, description="also return the probabilities of each window of the audio"),
    window: float | None = Query(None, ge=0.5, le=60, description="timeline window length in seconds "
                                 "(default: the model's serving.window_seconds)"),
    hop: float | None = Query(None, ge=0.1, le=60, description="seconds between window starts "
                              "(default: the model's serving.hop_seconds)"),
    profile: str | None = Form(None, description="optional: a speaker profile, the JSON answer of POST /profile "
                               "(or its `profile` object); models with features.reference = 'speaker' only"),
    predictor: Predictor = Depends(get_predictor),
) -> PredictResponse:
    name = file.filename or "upload"
    if window is not None and hop is not None and hop > window:
        raise APIError(422, "invalid_request", f"hop ({hop:g} s) must not exceed window ({window:g} s)")
    speaker = _parse_profile(profile, predictor) if profile is not None else None
    data = await file.read()
    if not data:
        raise APIError(400, "empty_file", f"'{name}' is empty (0 bytes)")
    # audio errors (no speech, too short, too long, undecodable) become JSON answers in app/errors.py
    result = await within(request.app.state.settings.request_timeout_s, predictor.predict(
        data, name, timeline=timeline, window=window, hop=hop, profile=speaker))
    request.state.audio_seconds = result.audio.duration  # for the access log and metrics (app/middleware.py)
    request.state.batch = result.batch
    labels = predictor.labels

    def scores(probs):
        if probs is None:  # a timeline window without speech
            return {"speech": False}
        top = int(probs.argmax())
        return {"emotion": labels[top], "probability": float(probs[top]),
                "probabilities": {label: float(p) for label, p in zip(labels, probs)}}

    return PredictResponse(
        **scores(result.probabilities),
        audio=AudioSummary(duration=round(result.audio.duration, 4), sample_rate=result.audio.sample_rate,
                           channels=result.audio.channels, format=result.audio.format),
        model=ModelRef(name=predictor.model.name, version=predictor.model.version),
        windows=result.windows,
        speech_seconds=result.speech_seconds,
        profile=None if speaker is None else ProfileRef(clips=speaker.clips, frames=speaker.frames),
        timeline=None if result.timeline is None else [
            TimelineSegment(start=s.start, end=s.end, **scores(s.probabilities)) for s in result.timeline],
    )


def require_profiles(predictor: Predictor) -> None:
    """422 profiles_unsupported unless the served model's features take a speaker reference."""
    if not predictor.uses_profiles:
        raise APIError(422, "profiles_unsupported",
                       f"model {predictor.model.name} version {predictor.model.version} does not use speaker "
                       "profiles (GET /model: features.reference is not 'speaker'); POST /predict the audio alone")


def _parse_profile(text: str, predictor: Predictor) -> SpeakerProfile:
    require_profiles(predictor)
    try:
        data = json.loads(text)
        if isinstance(data, dict) and isinstance(data.get("profile"), dict):  # a whole POST /profile answer
            data = data["profile"]
        return predictor.parse_profile(data)
    except json.JSONDecodeError as exc:
        raise APIError(422, "invalid_profile", f"the form field 'profile' is not JSON ({exc.msg}); send the "
                       "'profile' object of a POST /profile answer") from None
    except ValueError as exc:
        raise APIError(422, "invalid_profile", f"the form field 'profile': {exc} (send the 'profile' object of "
                       "a POST /profile answer from this model)") from None
