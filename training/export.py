"""Writing a trained Keras model in the exported-model format (speech_emotion/model.py: its layout and
metadata, and the loader the service uses)."""

from __future__ import annotations

import csv
import json
import logging
import shutil
import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from speech_emotion.model import (INPUT_NAME, METADATA_FILE, OUTPUT_NAME, SIGNATURE, ModelMetadata,
                                  library_versions, model_versions)

log = logging.getLogger(__name__)


def export_model(
    model, models_dir: str | Path, name: str, metadata: dict[str, Any], *, version: int | None = None
) -> Path:
    """Write ``model`` (a Keras model) as ``<models_dir>/<name>/<version>/`` with ``metadata.json``.

    The version defaults to one more than the newest; it is written to a temporary folder first and moved
    into place, so a server watching the folder never sees half an export.
    """
    import keras
    import tensorflow as tf

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
        archive.add_endpoint(
            name="serve",
            fn=lambda features: {OUTPUT_NAME: model(features, training=False)},
            input_signature=[tf.TensorSpec((None, *shape), tf.float32, name=INPUT_NAME)],
        )
        archive.write_out(str(tmp), verbose=False)
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
