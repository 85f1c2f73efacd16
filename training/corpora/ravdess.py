"""RAVDESS: ``Actor_12/03-01-05-01-02-02-12.wav``, seven two-digit fields.

modality (01 AV, 02 video, 03 audio) - vocal channel (01 speech, 02 song) - emotion - intensity -
statement - repetition - actor. Only speech is kept: song files are excluded, not skipped.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from training.corpora.manifest import Excluded, Labelled, Layout

EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fear",
    "07": "disgust",
    "08": "surprise",
}
_NAME = re.compile(r"^(?P<modality>0[1-3])-(?P<channel>0[12])-(?P<emotion>0[1-8])-(?P<intensity>0[12])"
                   r"-(?P<statement>0[12])-(?P<repetition>0[12])-(?P<actor>\d\d)$")


def parse(path: PurePosixPath) -> Labelled | None:
    m = _NAME.match(path.stem)
    if not m:
        return None
    if m["channel"] != "01":
        raise Excluded("RAVDESS song (vocal channel 02); only speech is used")
    return Labelled(emotion=EMOTIONS[m["emotion"]], label=m["emotion"], speaker=m["actor"])


LAYOUT = Layout("ravdess", "RAVDESS: 03-01-05-01-02-02-12.wav (emotion = 3rd field, actor = last; speech only)",
                parse)
