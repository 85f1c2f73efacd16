#!/usr/bin/env python
"""Score a training run's pooled test predictions again over a subset of its emotions.

For comparing models trained on different label sets on the same clips: e.g. a 7-emotion EMO-DB model
against a 6-emotion one (no boredom), both leave one speaker out. The run's ``predictions.csv`` holds each
test clip's probabilities; clips of the other emotions are dropped and each remaining clip's answer is the
most probable of the kept emotions (as a model trained without the others would have to answer), and,
for reference, its answer over all of the run's emotions (an answer outside the subset counts as wrong).

    python benchmarks/rescore.py runs/<run> --emotions angry,disgust,fear,happy,neutral,sad
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.evaluate import classification_metrics  # noqa: E402
from training.report import read_predictions  # noqa: E402


def rescore(predictions: Path, emotions: list[str]) -> dict:
    labels, rows = read_predictions(predictions)
    missing = [e for e in emotions if e not in labels]
    if missing:
        raise SystemExit(f"{predictions}: no column for {', '.join(missing)} (the run's emotions: {', '.join(labels)})")
    kept = [r for r in rows if r["emotion"] in emotions]
    y = np.array([emotions.index(r["emotion"]) for r in kept])
    within = np.array([int(np.argmax([float(r[e]) for e in emotions])) for r in kept])
    everything = np.array([emotions.index(r["predicted"]) if r["predicted"] in emotions else -1 for r in kept])
    outside = int((everything < 0).sum())
    # an answer outside the subset is wrong: score it as a class no clip has
    everything[everything < 0] = len(emotions)
    return {"clips": len(kept), "dropped": len(rows) - len(kept), "run_emotions": labels,
            "within": classification_metrics(y, within, emotions),
            "all": classification_metrics(y, everything, emotions + ["(other)"]), "outside": outside}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run folder (runs/<run>) or its predictions.csv")
    parser.add_argument("--emotions", required=True, type=lambda s: s.split(","), metavar="E1,E2")
    args = parser.parse_args()
    path = args.run / "predictions.csv" if args.run.is_dir() else args.run
    r = rescore(path, args.emotions)
    print(f"{path}: {r['clips']} clips of {', '.join(args.emotions)} ({r['dropped']} of other emotions dropped)")
    print(f"  answer = the most probable of these {len(args.emotions)}: UAR {r['within']['uar']:.3f}, "
          f"accuracy {r['within']['accuracy']:.3f}, macro-F1 {r['within']['macro_f1']:.3f}")
    print(f"  answer over all {len(r['run_emotions'])} of the run's emotions ({r['outside']} answers outside "
          f"these, counted wrong): UAR {r['all']['uar']:.3f}, accuracy {r['all']['accuracy']:.3f}")
    print("  recall: " + ", ".join(f"{e} {r['within']['per_class'][e]['recall']:.2f}" for e in args.emotions))
    return 0


if __name__ == "__main__":
    sys.exit(main())
