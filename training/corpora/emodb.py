"""EMO-DB (Berlin Database of Emotional Speech): ``wav/03a01Fa.wav``.

Speaker (2 digits), text (``a01``..``b10``), emotion letter (German initial), take letter.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from training.corpora.manifest import Labelled, Layout

EMOTIONS = {
    "W": "angry",  # Wut
    "L": "boredom",  # Langeweile
    "E": "disgust",  # Ekel
    "A": "fear",  # Angst
    "F": "happy",  # Freude
    "T": "sad",  # Trauer
    "N": "neutral",
}
_NAME = re.compile(r"^(?P<speaker>\d\d)(?P<text>[ab]\d\d)(?P<emotion>[WLEAFTN])(?P<take>[a-z])$")


def parse(path: PurePosixPath) -> Labelled | None:
    m = _NAME.match(path.stem)
    if not m:
        return None
    return Labelled(emotion=EMOTIONS[m["emotion"]], label=m["emotion"], speaker=m["speaker"])


LAYOUT = Layout("emodb", "EMO-DB: 03a01Fa.wav (speaker 03, text a01, emotion F, take a)", parse)
