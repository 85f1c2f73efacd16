"""The exported-model format: training writes it (training/export.py), the service reads it.

TensorFlow Serving's layout: ``models/<name>/<version>/`` holds a SavedModel whose ``serving_default``
signature maps ``features`` (float32, ``(batch, steps, dims)``) to ``probabilities`` (``(batch, labels)``),
and ``metadata.json`` beside it: labels in output order, feature settings, training corpus, protocol and
metrics, library versions, creation time.
"""

from __future__ import annotations

import json
import platform
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from speech_emotion.features import FeatureSet, MeanMFCC, settings_from_dict

METADATA_FILE = "metadata.json"
SIGNATURE = "serving_default"
INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"


class ModelNotFoundError(FileNotFoundError):
    pass


@dataclass(kw_only=True)
class ModelMetadata:
    """``metadata.json``: what makes a SavedModel servable and says what it is.

    Written by training/export.py, read by :class:`ExportedModel`. The sections of a trained model's story
    (``model``, ``training``, ``evaluation``) stay plain JSON objects: training/export.py ``model_metadata``
    says what they hold. Keys this version does not know are kept in ``extra`` and written back.
    """

    name: str
    version: int
    format: str = "tf_saved_model"
    signature: str = SIGNATURE
    input: dict[str, Any]  # name, dtype, shape [None, steps or None, dims]
    output: dict[str, Any]  # name, dtype
    labels: list[str]  # in the order of the model's probabilities
    #: how long audio is cut into windows (serving_defaults); None in exports made before it was recorded
    serving: dict[str, float] | None = None
    features: dict[str, Any]  # FeatureSet.to_dict(): how the model is fed, applied to every upload
    model: dict[str, Any] = field(default_factory=dict)  # builder, its arguments, parameter count
    training: dict[str, Any] = field(default_factory=dict)  # corpora and their licences, speakers, settings
    evaluation: dict[str, Any] = field(default_factory=dict)  # protocol, metrics, robustness, cross-corpus
    versions: dict[str, str] = field(default_factory=dict)  # libraries it was exported with
    created: str = ""  # UTC, ISO 8601
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = METADATA_FILE) -> "ModelMetadata":
        known = {f.name for f in fields(cls)} - {"extra"}
        required = {"name", "version", "input", "output", "labels", "features"}
        missing = sorted(required - set(data))
        if missing:
            raise ValueError(f"{source} lacks {', '.join(missing)}: export models with `python -m training`")
        return cls(**{k: v for k, v in data.items() if k in known},
                   extra={k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        if data["serving"] is None:
            del data["serving"]
        return {**data, **self.extra}


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for package in ("tensorflow", "keras", "librosa", "numpy", "soundfile", "soxr", "scikit-learn"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            pass
    return versions


def model_versions(base: Path) -> list[int]:
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name))


def resolve_model_dir(path: str | Path) -> Path:
    """A version folder from a version folder, a model folder (newest version) or a models root holding one model."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    versions = [v for v in model_versions(path) if (path / str(v) / "saved_model.pb").is_file()]
    if versions:
        return path / str(versions[-1])
    if path.is_dir():
        names = sorted(p for p in path.iterdir() if p.is_dir() and model_versions(p))
        if len(names) == 1:
            return resolve_model_dir(names[0])
        if len(names) > 1:
            raise ModelNotFoundError(f"{path} holds several models ({', '.join(n.name for n in names)}); "
                                     "point at one of them")
    raise ModelNotFoundError(f"no SavedModel under {path} (expected <name>/<version>/saved_model.pb)")


def serving_defaults(features: FeatureSet, durations: list[float]) -> dict[str, float]:
    """How the service treats long audio, from what the model was trained on.

    ``span_seconds``: the longest clip analysed in one pass (the longest training clip, rounded up to
    0.5 s; the seed recipe's fixed window). Longer audio is cut into windows of ``window_seconds``
    every ``hop_seconds``, and the overall answer is the mean over windows.
    """
    if isinstance(features, MeanMFCC):
        span = features.offset + (features.duration or 3.0)
        return {"span_seconds": span, "window_seconds": span, "hop_seconds": span / 2}
    span = max(1.0, float(np.ceil(2 * max(durations, default=10.0)) / 2))
    window = min(span, 3.0)
    return {"span_seconds": span, "window_seconds": window, "hop_seconds": window / 2}


@dataclass
class ExportedModel:
    """A loaded export: its metadata, feature settings, and the serving signature as a callable."""

    path: Path
    metadata: ModelMetadata
    features: FeatureSet
    labels: list[str]
    _loaded: Any  # the loaded SavedModel; the signature needs its variables alive
    _signature: Any

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def version(self) -> int:
        return int(self.metadata.version)

    @property
    def serving(self) -> dict[str, float]:
        """Long-audio settings from the metadata (exports made before they were recorded: derived)."""
        return self.metadata.serving or serving_defaults(self.features, [])

    @classmethod
    def load(cls, path: str | Path, *, graph: bool = True) -> "ExportedModel":
        """The export at ``path``. ``graph=False``: its metadata and feature settings only, without importing
        TensorFlow (for processes that compute features and never call the model); :meth:`predict` then
        raises."""
        path = resolve_model_dir(path)
        meta_path = path / METADATA_FILE
        if not meta_path.is_file():
            raise ModelNotFoundError(f"{path} has no {METADATA_FILE}; export models with `python -m training`")
        metadata = ModelMetadata.from_dict(json.loads(meta_path.read_text()), str(meta_path))
        loaded = signature = None
        if graph:
            from speech_emotion.runtime import import_tensorflow

            loaded = import_tensorflow().saved_model.load(str(path))
            signature = loaded.signatures[metadata.signature]
        return cls(path, metadata, settings_from_dict(metadata.features), list(metadata.labels), loaded, signature)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Probabilities for a batch ``(batch, steps, dims)``; one row per input, columns in label order."""
        if self._signature is None:
            raise RuntimeError(f"{self.path} was loaded without its graph (graph=False): it cannot predict")
        import tensorflow as tf

        out = self._signature(**{INPUT_NAME: tf.constant(features, dtype=tf.float32)})
        return out[OUTPUT_NAME].numpy()
