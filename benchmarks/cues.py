#!/usr/bin/env python
"""What tells the emotions apart in each corpus: utterance statistics of the default model's own features,
per corpus and emotion. Prints what it measured. A cue whose order across the emotions differs between two
corpora (say, sad slower than neutral in one and not in the other) is one that a model trained on one
cannot carry to the other, whatever the recipe.

For a seeded sample of each corpus's clips per emotion, from the frames the model reads (speech only, the
log-mel normalised per utterance, the two pitch columns), the means over the clips of:

- ``speech s``: seconds of speech left after speech detection;
- ``flux``: the mean absolute change of the log-mel from one frame to the next (how fast the spectrum moves);
- ``tilt``: the lowest quarter of the bands minus the highest quarter (a steeper, breathier spectrum: higher);
- ``F0 sd``: the spread of F0 over voiced frames, in semitones (intonation);
- ``voiced``: the share of frames with an F0;
- ``periodicity``: YIN's periodicity over voiced frames (1: perfectly periodic; breathy or creaky: lower).

    python benchmarks/cues.py [--clips 60] [--seed 0] [--features logmel-robust-4k]
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from speech_emotion.audio import read_audio  # noqa: E402
from speech_emotion.features import FEATURE_SETS  # noqa: E402
from speech_emotion.speech import NoSpeechError  # noqa: E402
from training.corpora import load_corpus  # noqa: E402

COLUMNS = ("speech s", "flux", "tilt", "F0 sd", "voiced", "periodicity")


def clip_cues(x: np.ndarray, n_mels: int, frames_per_second: float) -> tuple[float, ...]:
    mel, semitones, periodicity = x[:, :n_mels], x[:, n_mels] * 6.0, x[:, n_mels + 1]
    voiced = semitones != 0  # the pitch column is 0 exactly where a frame is unvoiced
    quarter = n_mels // 4
    return (
        x.shape[0] / frames_per_second,
        float(np.abs(np.diff(mel, axis=0)).mean()) if len(mel) > 1 else 0.0,
        float(mel[:, :quarter].mean() - mel[:, -quarter:].mean()),
        float(semitones[voiced].std()) if voiced.sum() > 2 else 0.0,
        float(voiced.mean()),
        float(periodicity[voiced].mean()) if voiced.any() else 0.0,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--corpora", nargs="+", default=["emodb", "tess"])
    parser.add_argument("--clips", type=int, default=60, help="clips per corpus and emotion (seeded sample)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--features", default="logmel-robust-4k", help="a feature set with pitch columns")
    args = parser.parse_args(argv)

    settings = FEATURE_SETS[args.features]
    if not getattr(settings, "pitch", False):
        parser.error(f"{args.features} has no pitch columns")
    per_second = settings.sample_rate / settings.hop_length
    rows = []
    for corpus_name in args.corpora:
        corpus = load_corpus(args.shared / corpus_name)
        by_emotion = defaultdict(list)
        for utt in corpus.utterances:
            by_emotion[utt.emotion].append(utt)
        rng = np.random.default_rng(args.seed)
        for emotion in sorted(by_emotion):
            utts = by_emotion[emotion]
            picked = [utts[i] for i in sorted(rng.choice(len(utts), min(args.clips, len(utts)), replace=False))]
            cues = []
            for utt in picked:
                try:
                    cues.append(clip_cues(settings.extract(read_audio(utt.path)), settings.n_mels, per_second))
                except NoSpeechError:
                    continue
            rows.append((corpus_name, emotion, len(cues), np.mean(cues, axis=0)))

    print(f"Utterance cues of {args.features} frames; up to {args.clips} clips per corpus and emotion, "
          f"seed {args.seed}; means over the clips\n")
    print("| corpus | emotion | clips | " + " | ".join(COLUMNS) + " |")
    print("|---|---|---|" + "---|" * len(COLUMNS))
    for corpus_name, emotion, n, means in rows:
        print(f"| {corpus_name} | {emotion} | {n} | " + " | ".join(f"{v:.3f}" for v in means) + " |")


if __name__ == "__main__":
    main()
