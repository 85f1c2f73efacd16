"""CREMA-D: ``1001_DFA_ANG_XX.wav``: actor, sentence, emotion, intensity (LO, MD, HI, XX)."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from training.corpora.manifest import Labelled, Layout

EMOTIONS = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
_NAME = re.compile(r"^(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>ANG|DIS|FEA|HAP|NEU|SAD)"
                   r"_(?P<level>LO|MD|HI|XX|X)$")


def parse(path: PurePosixPath) -> Labelled | None:
    m = _NAME.match(path.stem)
    if not m:
        return None
    return Labelled(emotion=EMOTIONS[m["emotion"]], label=m["emotion"], speaker=m["actor"])


LAYOUT = Layout("cremad", "CREMA-D: 1001_DFA_ANG_XX.wav (actor, sentence, emotion, level)", parse)
