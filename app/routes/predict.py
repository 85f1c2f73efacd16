from __future__ import annotations

from fastapi import APIRouter, Depends, File, UploadFile

from app.deps import get_predictor
from app.errors import APIError
from app.inference import AudioTooLongError, Predictor
from app.schemas import AudioSummary, ErrorResponse, ModelRef, PredictResponse
from training.audio import AudioDecodeError, AudioTooShortError

router = APIRouter(tags=["prediction"])

FORMATS = "WAV (8/16/24/32-bit integer or float, any sample rate, mono or stereo); FLAC, OGG, AIFF and MP3 too"


def _error(description: str) -> dict:
    return {"model": ErrorResponse, "description": description}


@router.post(
    "/predict",
    response_model=PredictResponse,
    summary="Emotion probabilities for an audio clip",
    description="Upload one audio file as multipart/form-data in the field `file`. "
                f"Accepted: {FORMATS}. The audio is converted exactly as in training (mono, resampled, the "
                "model's feature settings; see GET /model) and the answer holds every label's probability.",
    responses={
        400: _error("no file, or an empty file (code missing_file / empty_file)"),
        413: _error("body over SER_MAX_UPLOAD_MB, or audio over SER_MAX_AUDIO_SECONDS"),
        415: _error("not decodable audio (code unsupported_audio)"),
        422: _error("audio too short to analyse (code audio_too_short)"),
        503: _error("no model loaded (see GET /health)"),
    },
)
async def predict(
    file: UploadFile = File(..., description=f"the audio file: {FORMATS}"),
    predictor: Predictor = Depends(get_predictor),
) -> PredictResponse:
    name = file.filename or "upload"
    data = await file.read()
    if not data:
        raise APIError(400, "empty_file", f"'{name}' is empty (0 bytes)")
    try:
        result = await predictor.predict(data, name)
    except AudioTooShortError as exc:
        raise APIError(422, "audio_too_short", f"'{name}' is {exc}") from None
    except AudioTooLongError as exc:
        raise APIError(413, "audio_too_long", str(exc)) from None
    except AudioDecodeError as exc:
        raise APIError(415, "unsupported_audio", f"{exc}. Send {FORMATS}.") from None
    probs = result.probabilities
    top = int(probs.argmax())
    labels = predictor.labels
    return PredictResponse(
        emotion=labels[top],
        probability=float(probs[top]),
        probabilities={label: float(p) for label, p in zip(labels, probs)},
        audio=AudioSummary(duration=round(result.audio.duration, 4), sample_rate=result.audio.sample_rate,
                           channels=result.audio.channels, format=result.audio.format),
        model=ModelRef(name=predictor.model.name, version=predictor.model.version),
    )
