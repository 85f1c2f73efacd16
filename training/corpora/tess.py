"""TESS (Toronto Emotional Speech Set), Kaggle copy: ``OAF_angry/OAF_back_angry.wav``.

Speaker from the OAF (older) / YAF (younger) prefix of the file, or of its folder when the file's prefix
is damaged (``OAF_neutral/OA_bite_neutral.wav``); emotion from the last word (``ps`` = pleasant surprise).
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from training.corpora.manifest import Labelled, Layout, canonical_emotion

_FILE = re.compile(r"^(?P<prefix>[A-Za-z]{2,3})_(?P<word>[A-Za-z]+)_(?P<emotion>[A-Za-z]+)$")
_SPEAKER = re.compile(r"^(OAF|YAF)(_|$)", re.IGNORECASE)


def _speaker(path: PurePosixPath, prefix: str) -> str | None:
    for name in (prefix, *(p for p in reversed(path.parent.parts))):
        m = _SPEAKER.match(name)
        if m:
            return m.group(1).upper()
    return None


def parse(path: PurePosixPath) -> Labelled | None:
    m = _FILE.match(path.stem)
    if not m:
        return None
    emotion = canonical_emotion(m["emotion"])
    speaker = _speaker(path, m["prefix"])
    if emotion is None or speaker is None:
        return None
    return Labelled(emotion=emotion, label=m["emotion"].lower(), speaker=speaker)


LAYOUT = Layout("tess", "TESS: OAF_angry/OAF_back_angry.wav (speaker OAF/YAF, word, emotion; ps = surprise)",
                parse)
