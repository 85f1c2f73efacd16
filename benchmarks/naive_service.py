"""The naive baseline for benchmarks/serving.py: what a notebook turned into an API usually looks like.

The same decoding and features as the real service, but the model is a Keras model wrapping the
SavedModel and each request calls ``model.predict`` (no compiled signature, no batching). Not part of the
product; run by the benchmark as ``uvicorn benchmarks.naive_service:app``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from fastapi import FastAPI, File, UploadFile  # noqa: E402

from speech_emotion.audio import read_audio  # noqa: E402
from speech_emotion.model import ExportedModel, resolve_model_dir  # noqa: E402

MODEL_DIR = resolve_model_dir(os.environ.get("SER_MODEL_PATH", "models"))
_meta = ExportedModel.load(MODEL_DIR)
FEATURES, LABELS = _meta.features, _meta.labels
model = keras.Sequential([
    keras.Input(shape=tuple(_meta.metadata.input["shape"][1:])),
    keras.layers.TFSMLayer(str(MODEL_DIR), call_endpoint="serving_default"),
])

app = FastAPI()


@app.post("/predict")
def predict(file: UploadFile = File(...)):
    audio = read_audio(file.file.read())
    x = FEATURES.extract(audio)[None]
    probs = model.predict(x, verbose=0)["probabilities"][0]
    top = int(np.argmax(probs))
    return {"emotion": LABELS[top], "probability": float(probs[top]),
            "probabilities": {label: float(p) for label, p in zip(LABELS, probs)}}


@app.get("/health")
def health():
    return {"status": "ok"}
