"""SAVEE: ``DC_a01.wav`` (flat) or ``DC/a01.wav`` (folder per speaker); speakers DC, JE, JK, KL.

Emotion prefix: a anger, d disgust, f fear, h happiness, n neutral, sa sadness, su surprise.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from training.corpora.manifest import Labelled, Layout

EMOTIONS = {"a": "angry", "d": "disgust", "f": "fear", "h": "happy", "n": "neutral", "sa": "sad", "su": "surprise"}
SPEAKERS = ("DC", "JE", "JK", "KL")
_FLAT = re.compile(r"^(?P<speaker>DC|JE|JK|KL)_(?P<emotion>sa|su|[adfhn])(?P<n>\d\d)$")
_BARE = re.compile(r"^(?P<emotion>sa|su|[adfhn])(?P<n>\d\d)$")


def parse(path: PurePosixPath) -> Labelled | None:
    m = _FLAT.match(path.stem)
    if m:
        speaker = m["speaker"]
    else:
        m = _BARE.match(path.stem)
        speaker = path.parent.name if path.parent.name in SPEAKERS else None
        if not m or speaker is None:
            return None
    return Labelled(emotion=EMOTIONS[m["emotion"]], label=m["emotion"], speaker=speaker)


LAYOUT = Layout("savee", "SAVEE: DC_a01.wav or DC/a01.wav (speaker DC/JE/JK/KL, emotion a/d/f/h/n/sa/su)", parse)
