"""Generic folder-per-emotion layout (the notebook's assumption): ``<root>/<emotion>/.../file.wav``.

The emotion is the nearest enclosing folder whose name (or its last ``_``/``-``/space separated word,
as in ``03-angry``) is an emotion word. The speaker is unknown unless ``speaker_regex`` finds it in the
path relative to the root: a regular expression with a group named ``speaker`` (or a first group),
e.g. ``^(?P<speaker>[^_/]+)_`` for files named ``spk01_xxx.wav``.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from training.corpora.manifest import Labelled, Layout, canonical_emotion


def folder_emotion(name: str) -> str | None:
    emotion = canonical_emotion(name)
    if emotion is None:
        words = [w for w in re.split(r"[_\-\s]+", name) if w]
        emotion = canonical_emotion(words[-1]) if words else None
    return emotion


def layout(speaker_regex: str | None = None) -> Layout:
    pattern = re.compile(speaker_regex) if speaker_regex else None
    if pattern is not None and not pattern.groups:
        raise ValueError(f"--speaker-regex {speaker_regex!r} needs a group, e.g. '^(?P<speaker>[^_]+)_'")

    def parse(path: PurePosixPath) -> Labelled | None:
        for folder in reversed(path.parent.parts):
            emotion = folder_emotion(folder)
            if emotion is not None:
                break
        else:
            return None
        speaker = ""
        if pattern is not None:
            m = pattern.search(path.as_posix())
            if m is None:
                return None
            speaker = m.groupdict().get("speaker") or m.group(1)
        return Labelled(emotion=emotion, label=folder, speaker=speaker)

    return Layout("folders", "one folder per emotion: <emotion>/<file>; speaker from --speaker-regex", parse)
