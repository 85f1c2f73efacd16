"""POST /profile: a speaker profile from some of a speaker's clips, for POST /predict's `profile` field."""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, Request, UploadFile

from app.deps import get_predictor
from app.errors import FORMATS, APIError
from app.inference import Predictor
from app.limits import within
from app.routes.predict import require_profiles
from app.schemas import UNAVAILABLE, ModelRef, ProfileResponse, error_response

router = APIRouter(tags=["prediction"])

#: Most clips one profile request may hold (the body size limit applies as well).
MAX_CLIPS = 100


@router.post(
    "/profile",
    response_model=ProfileResponse,
    summary="A speaker profile from some of a speaker's clips",
    description="Upload 1 to 100 recordings of ONE speaker as multipart/form-data, each in a field named "
                "`files` (any emotions; their labels are neither needed nor used). The answer's `profile` is "
                "that speaker's mean log-mel spectrum; send it back as the form field `profile` of "
                "`POST /predict` (the JSON text of the object) with each of their clips, and the model "
                "hears each clip relative to how that speaker usually sounds instead of relative to the clip "
                "itself. Only speech counts: silence and noise in the clips are left out (models with a speech "
                "detector, GET /model: features.speech), and a clip without speech is refused by name. Nothing is stored on the server: the profile lives with the client, works with every "
                "worker and survives restarts, and is valid for models with the same feature settings "
                "(`features`). More audio gives a better profile: on EMO-DB, 20 clips came close to all of a "
                "speaker's (about 53) and 5 clips did less well (README, 'What accuracy to expect').\n\n"
                "Only for models whose features use a speaker reference (GET /model: "
                "features.reference = 'speaker'); other models answer 422 `profiles_unsupported`.",
    responses={
        400: error_response("no file, or an empty file", "missing_file", "empty_file"),
        413: error_response("body over SER_MAX_UPLOAD_MB, or a clip over SER_MAX_AUDIO_SECONDS",
                            "payload_too_large", "audio_too_long"),
        415: error_response("a clip that is not decodable audio (the clip is named)", "unsupported_audio"),
        422: error_response("a clip without speech (the clip is named), a clip too short to analyse, more than "
                            "100 clips, or a model without speaker profiles", "no_speech", "audio_too_short",
                            "too_many_files", "profiles_unsupported"),
        503: UNAVAILABLE,
    },
)
async def profile(
    request: Request,
    files: list[UploadFile] = File(..., description=f"1 to {MAX_CLIPS} recordings of one speaker: {FORMATS}"),
    predictor: Predictor = Depends(get_predictor),
) -> ProfileResponse:
    require_profiles(predictor)
    if len(files) > MAX_CLIPS:
        raise APIError(422, "too_many_files", f"{len(files)} files; a profile takes at most {MAX_CLIPS}")
    clips = []
    for i, upload in enumerate(files):
        name = upload.filename or f"file {i + 1}"
        data = await upload.read()
        if not data:
            raise APIError(400, "empty_file", f"'{name}' is empty (0 bytes)")
        clips.append((data, name))
    # audio errors (no speech, too short, too long, undecodable) become JSON answers in app/errors.py
    result = await within(request.app.state.settings.request_timeout_s, predictor.profile(clips))
    return ProfileResponse(profile=result.to_dict(), seconds=round(result.frames * predictor.frame_seconds, 2),
                           model=ModelRef(name=predictor.model.name, version=predictor.model.version))
