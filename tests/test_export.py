"""The exported serving graph: the fused recurrence answers as the Keras model, and re-exporting an earlier
model keeps its weights, its metadata and its answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import BUNDLED, ROOT
from speech_emotion.audio import read_audio
from speech_emotion.features import FEATURE_SETS, pad_batch
from speech_emotion.model import ExportedModel, resolve_model_dir

FRAMES = FEATURE_SETS["logmel"]
CLIPS = ("03a01Fa.flac", "08b02Wd.flac", "16a01Ec.flac")


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    """Features of real recordings of different lengths."""
    return [FRAMES.extract(read_audio(BUNDLED / "wav" / name)) for name in CLIPS]


@pytest.fixture(scope="module")
def pair(clips):
    from training.models import build_crnn_ensemble

    return build_crnn_ensemble((None, clips[0].shape[1]), 6, members=2)


@pytest.fixture(scope="module")
def exported(pair, tmp_path_factory):
    from training.export import export_model

    out = export_model(pair, tmp_path_factory.mktemp("models"), "pair",
                       {"labels": list("abcdef"), "features": FRAMES.to_dict()})
    return ExportedModel.load(out)


def _op_types(exported: ExportedModel) -> set[str]:
    graph = exported._signature.graph.as_graph_def()
    return {node.op for node in graph.node} | {node.op for f in graph.library.function for node in f.node_def}


def test_the_exported_recurrence_is_one_fused_op_per_direction(exported):
    assert "BlockLSTMV2" in _op_types(exported)


def test_fused_graph_answers_as_the_keras_model_on_real_speech(pair, exported, clips):
    assert len({len(c) for c in clips}) == 3
    expected = np.asarray(pair(pad_batch(clips), training=False))
    np.testing.assert_allclose(exported.predict(pad_batch(clips)), expected, atol=1e-5)
    for clip, row in zip(clips, expected):
        np.testing.assert_allclose(exported.predict(clip[None])[0], row, atol=1e-5)


def test_a_mask_with_a_hole_takes_keras_own_loop(pair, exported, clips):
    """A zero frame inside a clip is masked, and Keras' LSTM skips its step: the fused op, which runs every
    step up to the length, would not compute that function, so the graph falls back to Keras' loop."""
    holed = clips[1].copy()
    holed[100:108] = 0.0
    expected = np.asarray(pair(holed[None], training=False))[0]
    np.testing.assert_allclose(exported.predict(holed[None])[0], expected, atol=1e-5)
    assert np.abs(expected - np.asarray(pair(clips[1][None], training=False))[0]).max() > 1e-4


def test_an_export_that_answers_otherwise_is_refused(pair, exported):
    from training.export import check_export

    shape = (None, exported.metadata.input["shape"][-1])
    assert check_export(exported.path, lambda x: np.asarray(pair(x, training=False)), shape) < 1e-5
    with pytest.raises(RuntimeError, match="away from the Keras model"):
        check_export(exported.path, lambda x: np.asarray(pair(x, training=False)) + 1e-3, shape)


def test_reexport_keeps_the_weights_the_metadata_and_the_answers(tmp_path, clips):
    from training.export import reexport

    source = resolve_model_dir(ROOT / "models")
    old = ExportedModel.load(source)
    out = reexport(source, models_dir=tmp_path)
    new = ExportedModel.load(out)
    assert out == tmp_path / old.name / "1"
    features = [old.features.extract(read_audio(BUNDLED / "wav" / name)) for name in CLIPS]
    np.testing.assert_allclose(new.predict(pad_batch(features)), old.predict(pad_batch(features)), atol=1e-5)
    before, after = old.metadata.to_dict(), json.loads((out / "metadata.json").read_text())
    for key in ("labels", "features", "serving", "model", "evaluation"):
        assert after[key] == before[key]
    assert after["training"].pop("reexported_from") == {
        "model": f"{old.name}/{old.version}", "created": old.metadata.created, "versions": old.metadata.versions}
    before["training"].pop("reexported_from", None)  # a re-export of a re-export names its own source
    assert after["training"] == before["training"]
