"""Process tuning: the allocator setting the service and the extraction workers apply; TensorFlow without Keras."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import numpy as np
import pytest

from speech_emotion.audio import read_audio
from speech_emotion.model import ExportedModel
from speech_emotion.runtime import retain_freed_memory
from tests.conftest import BUNDLED, ROOT
from tests.test_api import MODELS


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="mallopt is glibc's")
def test_allocator_thresholds_are_applied_on_glibc():
    assert retain_freed_memory() is True
    assert retain_freed_memory() is True  # idempotent


def test_a_model_process_loads_tensorflow_without_keras_and_answers_the_same():
    """ExportedModel.load imports TensorFlow without the Keras (and scikit-learn) TensorFlow would import on
    its own, seconds of every service worker's start; the answers equal this process's, where Keras may be
    loaded, and Keras can still be imported afterwards."""
    clip = BUNDLED / "wav" / "03a01Wa.flac"
    code = ("import json, sys; from speech_emotion.model import ExportedModel; "
            "from speech_emotion.audio import read_audio; "
            f"m = ExportedModel.load({str(MODELS)!r}); "
            f"p = m.predict(m.features.extract(read_audio({str(clip)!r}))[None]); "
            "held = sorted(k for k in ('keras', 'sklearn') if k in sys.modules); import keras; "
            "print(json.dumps({'held': held, 'p': p[0].tolist(), 'keras': keras.__version__}))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["held"] == [] and out["keras"]
    model = ExportedModel.load(MODELS)
    expected = model.predict(model.features.extract(read_audio(clip))[None])[0]
    np.testing.assert_allclose(out["p"], expected, rtol=0, atol=1e-6)
