"""Writing a trained Keras model in the exported-model format (speech_emotion/model.py: its layout and
metadata, and the loader the service uses)."""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from speech_emotion.model import (INPUT_NAME, METADATA_FILE, OUTPUT_NAME, SIGNATURE, ModelMetadata,
                                  library_versions, model_versions)

log = logging.getLogger(__name__)

#: How far the exported signature's probabilities may be from the Keras model's (float rounding only).
EXPORT_TOLERANCE = 1e-4


def probe_batch(shape: tuple[int | None, ...], seed: int = 0):
    """A fixed batch of three inputs of ``shape`` (``None`` steps: 301, 157 and 40 real frames, zero-padded
    as the service pads a batch), for checking that two graphs compute the same function."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if shape[0] is not None:
        return rng.normal(size=(3, *shape)).astype(np.float32)
    batch = np.zeros((3, 301, *shape[1:]), dtype=np.float32)
    for row, length in enumerate((301, 157, 40)):
        batch[row, :length] = rng.normal(size=(length, *shape[1:]))
    return batch


def check_export(path: str | Path, reference, shape: tuple[int | None, ...]) -> float:
    """Load the SavedModel at ``path`` and compare its serving signature with ``reference`` (a function of a
    batch, returning probabilities) on :func:`probe_batch`; raise if they differ by more than float rounding.
    """
    import numpy as np
    import tensorflow as tf

    batch = probe_batch(shape)
    signature = tf.saved_model.load(str(path)).signatures[SIGNATURE]
    got = signature(**{INPUT_NAME: tf.constant(batch)})[OUTPUT_NAME].numpy()
    # one row at a time too: a row's answer must not depend on what it is batched with
    alone = np.concatenate([signature(**{INPUT_NAME: tf.constant(batch[i:i + 1, :_length(row)])})[OUTPUT_NAME].numpy()
                            for i, row in enumerate(batch)])
    expected = np.asarray(reference(batch))
    difference = float(max(np.abs(got - expected).max(), np.abs(alone - expected).max()))
    if not difference <= EXPORT_TOLERANCE:
        raise RuntimeError(f"the exported signature at {path} answers up to {difference:.2g} away from the Keras "
                           f"model (at most {EXPORT_TOLERANCE:g} allowed): not exported")
    return difference


def _length(row) -> int:
    """Real frames of a zero-padded input row."""
    import numpy as np

    real = np.flatnonzero(np.abs(row.reshape(len(row), -1)).sum(axis=1))
    return int(real[-1]) + 1 if len(real) else 1


def export_model(
    model, models_dir: str | Path, name: str, metadata: dict[str, Any], *, version: int | None = None
) -> Path:
    """Write ``model`` (a Keras model) as ``<models_dir>/<name>/<version>/`` with ``metadata.json``.

    The version defaults to one more than the newest; it is written to a temporary folder first and moved
    into place, so a server watching the folder never sees half an export.
    """
    import keras
    import tensorflow as tf

    from training.serving_graph import fused_recurrence

    base = Path(models_dir) / name
    version = version if version is not None else (model_versions(base) or [0])[-1] + 1
    target = base / str(version)
    if target.exists():
        raise FileExistsError(f"{target} exists; choose another --version")
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=base))
    tmp.chmod(0o755)  # mkdtemp makes it private; servers often run as another user
    try:
        shape = tuple(model.inputs[0].shape[1:])
        archive = keras.export.ExportArchive()
        archive.track(model)
        with fused_recurrence(model) as fused:
            archive.add_endpoint(
                name="serve",
                fn=lambda features: {OUTPUT_NAME: model(features, training=False)},
                input_signature=[tf.TensorSpec((None, *shape), tf.float32, name=INPUT_NAME)],
            )
            archive.write_out(str(tmp), verbose=False)
        if fused:
            log.info("serving graph: %d bidirectional LSTM layer(s) fused", fused)
        check_export(tmp, lambda x: model(x, training=False).numpy(), shape)
        record = ModelMetadata.from_dict({
            "name": name,
            "version": version,
            "signature": SIGNATURE,
            "input": {"name": INPUT_NAME, "dtype": "float32", "shape": [None, *shape]},
            "output": {"name": OUTPUT_NAME, "dtype": "float32"},
            **metadata,
            "versions": library_versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        (tmp / METADATA_FILE).write_text(json.dumps(record.to_dict(), indent=2) + "\n")
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _summary(m: dict[str, Any], keys: tuple[str, ...] = ("n", "accuracy", "uar", "macro_precision", "macro_recall",
                                                          "macro_f1")) -> dict[str, Any]:
    return {k: m[k] for k in keys}


def model_metadata(metrics: dict[str, Any], config: dict[str, Any], utterances: list[dict[str, Any]],
                   parameters: int, run_name: str) -> dict[str, Any]:
    """``metadata.json``'s training and evaluation record of a run: what the model learnt from, under which
    licences, and what its protocol measured. ``metrics``: the run's (training/train.py); ``config``: its
    settings as a dict; ``utterances``: the manifest's rows (corpus, speaker, emotion, duration)."""
    from speech_emotion.features import settings_from_dict
    from speech_emotion.model import serving_defaults
    from training.config import portable_path
    from training.corpora import redistributable

    config = {**config, **{key: portable_path(config.get(key))
                           for key in ("data", "test_data", "models_dir", "runs_dir", "cache_dir")}}
    sources = metrics.get("corpora") or [{"name": metrics["corpus"]}]
    trained_on = [u for u in utterances if u["corpus"] in {c["name"] for c in sources}]
    pooled = metrics["pooled"]
    metadata: dict[str, Any] = {
        "labels": metrics["labels"],
        "serving": serving_defaults(settings_from_dict(metrics["features"]),
                                    [float(u["duration"]) for u in trained_on]),
        "features": metrics["features"],
        "model": {"builder": metrics["model"], "args": config.get("model_args", {}), "parameters": parameters},
        "training": {
            "corpus": metrics["corpus"],
            # every corpus the model learnt from, with its licence: what may be done with the model follows
            "corpora": [{**c, "path": portable_path(c.get("path"))} for c in metrics.get("corpora", [])],
            "redistributable": all(redistributable(c.get("licence", "unknown")) for c in sources),
            "utterances": len(trained_on),
            "speakers": sorted({u["speaker"] for u in trained_on}),
            "emotions": dict(sorted(Counter(u["emotion"] for u in trained_on).items())),
            "final_fit": metrics.get("final_fit"),
            "seed": metrics["seed"],
            "config": config,
            "run": run_name,
        },
        "evaluation": {
            "protocol": metrics["protocol"],
            "speaker_independent": metrics["speaker_independent"],
            "description": metrics["description"],
            "test_corpus": metrics.get("test_corpus") or metrics["corpus"],
            "metrics": _summary(pooled),
            "per_class_recall": {k: v["recall"] for k, v in pooled["per_class"].items()},
            "fold_uar_mean": metrics["fold_uar_mean"],
            "fold_uar_std": metrics["fold_uar_std"],
            "folds": len(metrics["folds"]),
        },
    }
    _add_evaluations(metadata["evaluation"], metrics)
    if not metadata["training"]["redistributable"]:
        log.warning("this model learnt from data whose licence does not allow redistributing it freely (%s): "
                    "keep it to yourself", ", ".join(f"{c['name']}: {c.get('licence', 'unknown')}" for c in sources))
    return metadata


def _add_evaluations(evaluation: dict[str, Any], metrics: dict[str, Any]) -> None:
    """The run's other measurements, where it made them: with speaker profiles, under degradations, on other
    corpora."""
    pooled = metrics["pooled"]
    if "with_profile" in metrics:  # the same folds, each test speaker with a profile of their test clips
        wp = metrics["with_profile"]
        evaluation["with_profile"] = {
            "description": wp["description"],
            "metrics": _summary(wp["pooled"]),
            "per_class_recall": {k: v["recall"] for k, v in wp["pooled"]["per_class"].items()},
            "fold_uar_mean": wp["fold_uar_mean"],
            "fold_uar_std": wp["fold_uar_std"],
        }
    if "robustness" in metrics:  # the same folds' test clips under fixed degradations, each alone
        rb = metrics["robustness"]
        evaluation["robustness"] = {
            "description": rb["description"],
            "clean_uar": pooled["uar"],
            "conditions": {k: _summary(v, ("uar", "accuracy", "uar_drop", "top_answer_share", "no_speech"))
                           for k, v in rb["conditions"].items()},
            "worst_drop": rb["worst_drop"],
        }
    if metrics.get("cross_corpus"):  # the final model on other corpora
        evaluation["cross_corpus"] = [
            {"corpus": c["corpus"], "emotions": c["emotions"], "description": c["description"],
             "metrics": _summary(c["metrics"], ("n", "accuracy", "uar", "macro_f1")),
             "per_class_recall": {k: c["metrics"]["per_class"][k]["recall"] for k in c["emotions"]}}
            for c in metrics["cross_corpus"]]


def export_trained(model, metrics: dict[str, Any], config: dict[str, Any], utterances: list[dict[str, Any]],
                   run_name: str, name: str, *, models_dir: str | Path, version: int | None = None) -> Path:
    """Export a model just trained, with the metadata of its run as it is in memory."""
    metadata = model_metadata(metrics, config, utterances, int(model.count_params()), run_name)
    out = export_model(model, models_dir, name, metadata, version=version)
    log.info("exported %s", out)
    return out


def export_run(run_dir: str | Path, name: str, *, models_dir: str | Path, version: int | None = None) -> Path:
    """Export the final model of an earlier run (``RUN_DIR/model.keras``) with metadata from its files:
    ``python -m training export``."""
    import keras

    run_dir = Path(run_dir)
    if not (run_dir / "model.keras").is_file():
        raise FileNotFoundError(f"{run_dir} has no model.keras (was it trained with --no-final-fit?)")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    with (run_dir / "manifest.csv").open(newline="") as f:
        utterances = list(csv.DictReader(f))
    model = keras.models.load_model(run_dir / "model.keras")
    return export_trained(model, metrics, config, utterances, run_dir.name, name, models_dir=models_dir,
                          version=version)


def reexport(source: str | Path, name: str | None = None, *, models_dir: str | Path,
             version: int | None = None) -> Path:
    """Write an earlier export again with this version's export code (its serving graph), same weights:
    ``python -m training export models/<name>/<version>``.

    The Keras model is rebuilt from the metadata's builder and arguments and given the SavedModel's
    variables by name; it must answer as the old signature does (:func:`check_export`), and the new export
    as it does. The metadata is carried over as it is, with where it came from added to ``training``.
    """
    import tensorflow as tf

    from speech_emotion.model import resolve_model_dir
    from training.models import MODEL_BUILDERS

    source = resolve_model_dir(source)
    old = ModelMetadata.from_dict(json.loads((source / METADATA_FILE).read_text()), str(source / METADATA_FILE))
    builder = old.model.get("builder")
    if builder not in MODEL_BUILDERS:
        raise ValueError(f"{source}: model builder {builder!r} is not one of {', '.join(MODEL_BUILDERS)}")
    shape = tuple(old.input["shape"][1:])
    model = MODEL_BUILDERS[builder](shape, len(old.labels), **old.model.get("args", {}))
    loaded = tf.saved_model.load(str(source))
    # Variables are written in the model's own order; names agree up to the numbers Keras appends to
    # automatic layer names (forward_lstm_2), which count the layers made before in the process. Seed
    # generators' state (dropout's random stream) does nothing at inference.
    saved = [v for v in loaded.variables if "seed_generator" not in v.name]
    wanted = [v for v in model.variables if "seed_generator" not in v.path]
    pairs = list(zip(wanted, saved))
    if len(saved) != len(wanted) or any(_unnumbered(w.path) != _unnumbered(s.name.removesuffix(":0"))
                                        or tuple(w.shape) != tuple(s.shape) for w, s in pairs):
        raise ValueError(f"{source}'s variables are not those of a {builder} model with arguments "
                         f"{old.model.get('args', {})} as this version builds it")
    for variable, value in pairs:
        variable.assign(value.numpy())
    check_export(source, lambda x: model(x, training=False).numpy(), shape)

    sections = old.to_dict()
    for key in ("name", "version", "format", "signature", "input", "output", "versions", "created"):
        sections.pop(key, None)
    sections["training"] = {**sections.get("training", {}),
                            "reexported_from": {"model": f"{old.name}/{old.version}", "created": old.created,
                                                "versions": old.versions}}
    out = export_model(model, models_dir, name or old.name, sections, version=version)
    log.info("exported %s (the weights of %s)", out, source)
    return out


def _unnumbered(path: str) -> str:
    return re.sub(r"_\d+(?=/|$)", "", path)
