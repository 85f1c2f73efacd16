"""Writing a trained Keras model in the exported-model format (speech_emotion/model.py: its layout and
metadata, and the loader the service uses)."""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from speech_emotion.model import (INPUT_NAME, METADATA_FILE, OUTPUT_NAME, SIGNATURE, library_versions,
                                  model_versions)


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
        meta = {
            "name": name,
            "version": version,
            "format": "tf_saved_model",
            "signature": SIGNATURE,
            "input": {"name": INPUT_NAME, "dtype": "float32", "shape": [None, *shape]},
            "output": {"name": OUTPUT_NAME, "dtype": "float32"},
            **metadata,
            "versions": library_versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
