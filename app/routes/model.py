from __future__ import annotations

from fastapi import APIRouter, Depends

from app.deps import get_predictor
from app.inference import Predictor
from app.schemas import ModelInfo, error_response

router = APIRouter(tags=["service"])


@router.get(
    "/model",
    response_model=ModelInfo,
    summary="The served model's metadata",
    description="Labels in output order, the feature settings applied to uploads, the training corpus, the "
                "evaluation protocol (speaker-independent or not) with its metrics, library versions.",
    responses={503: error_response("no model loaded", "model_unavailable")},
)
def model_info(predictor: Predictor = Depends(get_predictor)) -> ModelInfo:
    model = predictor.model
    return ModelInfo(**{**model.metadata.to_dict(), "serving": model.serving}, path=str(model.path))
