"""benchmarks/ensembles.py: several runs' answers averaged per clip, scored."""

from __future__ import annotations

import csv

import pytest

from benchmarks.ensembles import ensembles

LABELS = ["angry", "neutral", "sad"]
TRUTH = ["angry", "neutral", "sad"]


def _run(folder, probabilities):
    folder.mkdir()
    with open(folder / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "speaker", "fold", "emotion", "predicted", *LABELS])
        for i, (emotion, probs) in enumerate(zip(TRUTH, probabilities)):
            w.writerow([f"clip{i}.wav", "s1", "test", emotion, LABELS[probs.index(max(probs))], *probs])
    return folder


def test_the_mean_of_two_runs_answers_what_neither_does(tmp_path):
    # each run is sure of one wrong answer for the sad clip and leans to sad otherwise: together, sad wins
    a = _run(tmp_path / "a", [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.0, 0.55, 0.45]])
    b = _run(tmp_path / "b", [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.55, 0.0, 0.45]])
    r = ensembles([a, b])
    assert [round(m["uar"], 3) for m in r["single"]] == [0.667, 0.667]
    assert r["sizes"][2] == {"choices": 1, "mean": 1.0, "min": 1.0, "max": 1.0}
    assert r["answers"] == {"angry": 1, "neutral": 1, "sad": 1}


def test_runs_of_other_clips_are_refused(tmp_path):
    a = _run(tmp_path / "a", [[0.8, 0.1, 0.1]] * 3)
    b = _run(tmp_path / "b", [[0.8, 0.1, 0.1]] * 2)
    with pytest.raises(SystemExit, match="did not score the same clips"):
        ensembles([a, b])
