"""benchmarks/rescore.py: a run's predictions scored again over a subset of its emotions."""

from __future__ import annotations

import csv

import pytest

from benchmarks.rescore import rescore

LABELS = ["angry", "boredom", "sad"]


def _predictions(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "speaker", "fold", "emotion", "predicted", *LABELS])
        for emotion, probs in rows:
            w.writerow([f"{emotion}.wav", "03", "test=03", emotion, LABELS[probs.index(max(probs))], *probs])
    return path


def test_answers_are_taken_within_the_subset(tmp_path):
    path = _predictions(tmp_path / "predictions.csv", [
        ("angry", [0.6, 0.3, 0.1]),   # right either way
        ("sad", [0.1, 0.6, 0.3]),     # boredom over all three; sad within angry/sad
        ("boredom", [0.1, 0.8, 0.1]),  # dropped
    ])
    r = rescore(path, ["angry", "sad"])
    assert (r["clips"], r["dropped"], r["outside"]) == (2, 1, 1)
    assert r["within"]["uar"] == 1.0
    assert r["all"]["uar"] == 0.5  # the sad clip answered boredom counts wrong


def test_an_emotion_the_run_lacks_is_refused(tmp_path):
    path = _predictions(tmp_path / "predictions.csv", [("angry", [0.6, 0.3, 0.1])])
    with pytest.raises(SystemExit, match="no column for happy"):
        rescore(path, ["angry", "happy"])
