#!/usr/bin/env python
"""What averaging several training runs' answers would score: seed ensembles from the runs' predictions.

Each run folder's ``predictions.csv`` holds every test clip's probabilities (``benchmarks/accuracy.py
--runs-dir DIR`` keeps the folders). The runs must have scored the same clips over the same emotions, e.g.
one recipe and task with different seeds. Printed: each run's UAR, and for every ensemble size K, the UAR
of each K runs' mean probabilities per clip (mean, lowest and highest over all choices of K runs), with
the per-class recall and the answers of the ensemble of all of them.

    python benchmarks/accuracy.py --recipes crnn-robust-4k --tasks emodb-tess --seeds 0 1 2 3 4 5 --runs-dir runs/seeds
    python benchmarks/ensembles.py runs/seeds/*cross-corpus*
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.evaluate import classification_metrics  # noqa: E402
from training.report import read_predictions  # noqa: E402

def run_predictions(run: Path) -> tuple[list[str], list[str], list[str], np.ndarray]:
    """``(labels, paths, emotions, probabilities)`` of one run folder (or its predictions.csv), rows by path."""
    labels, rows = read_predictions(run)
    rows.sort(key=lambda r: r["path"])
    if not rows:
        raise SystemExit(f"{run}: no predictions")
    return (labels, [r["path"] for r in rows], [r["emotion"] for r in rows],
            np.array([[float(r[c]) for c in labels] for r in rows]))


def _name(run: Path) -> str:
    """The run folder, with its seed when its config.json says it."""
    config = (run if run.is_dir() else run.parent) / "config.json"
    seed = json.loads(config.read_text()).get("seed") if config.is_file() else None
    return f"{run} (seed {seed})" if seed is not None else str(run)


def ensembles(runs: list[Path]) -> dict:
    """Every single run's metrics, and per ensemble size the UARs of all its choices of runs."""
    read = [run_predictions(r) for r in runs]
    labels, paths, emotions, _ = read[0]
    for run, (other_labels, other_paths, _, _) in zip(runs[1:], read[1:]):
        if other_labels != labels or other_paths != paths:
            raise SystemExit(f"{run} did not score the same clips over the same emotions as {runs[0]}")
    classes = sorted(set(emotions), key=labels.index)
    y = np.array([classes.index(e) for e in emotions])
    columns = [labels.index(c) for c in classes]

    def metrics(probabilities: np.ndarray) -> dict:
        return classification_metrics(y, probabilities[:, columns].argmax(axis=1), classes)

    probs = [p for _, _, _, p in read]
    sizes = {}
    for k in range(2, len(runs) + 1):
        uars = [metrics(np.mean([probs[i] for i in combo], axis=0))["uar"]
                for combo in itertools.combinations(range(len(runs)), k)]
        sizes[k] = {"choices": len(uars), "mean": float(np.mean(uars)), "min": min(uars), "max": max(uars)}
    everything = np.mean(probs, axis=0)[:, columns].argmax(axis=1)
    return {"clips": len(paths), "emotions": classes, "single": [metrics(p) for p in probs], "sizes": sizes,
            "all": metrics(np.mean(probs, axis=0)),
            "answers": {c: int((everything == i).sum()) for i, c in enumerate(classes)}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (or their predictions.csv), two or more")
    args = parser.parse_args()
    if len(args.runs) < 2:
        parser.error("an ensemble needs two runs or more")
    r = ensembles(args.runs)
    print(f"{r['clips']} clips, emotions {', '.join(r['emotions'])}")
    uars = [m["uar"] for m in r["single"]]
    for run, m in zip(args.runs, r["single"]):
        print(f"  {_name(run)}: UAR {m['uar']:.3f}")
    print(f"single runs: UAR {np.mean(uars):.3f} ± {np.std(uars):.3f} (lowest {min(uars):.3f}, highest {max(uars):.3f})")
    for k, s in r["sizes"].items():
        print(f"ensembles of {k} runs ({s['choices']} choices): UAR mean {s['mean']:.3f}, lowest {s['min']:.3f}, "
              f"highest {s['max']:.3f}")
    print("all of them: recall " + ", ".join(f"{e} {r['all']['per_class'][e]['recall']:.2f}" for e in r["emotions"])
          + "; answers " + ", ".join(f"{e} {n}" for e, n in r["answers"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
