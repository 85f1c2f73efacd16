"""The one manifest format every corpus loader produces, and the canonical emotion vocabulary."""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Callable

#: One vocabulary across corpora (CANONICAL_EMOTIONS, below), each word with the labels corpora use for it;
#: each utterance also keeps its corpus' own label.
_SYNONYMS = {
    "angry": ("angry", "anger", "ang", "mad", "wut"),
    "boredom": ("boredom", "bored", "langeweile"),
    "calm": ("calm",),
    "disgust": ("disgust", "disgusted", "dis", "ekel"),
    "fear": ("fear", "fearful", "afraid", "fea", "angst"),
    "happy": ("happy", "happiness", "hap", "joy", "freude"),
    "neutral": ("neutral", "neu"),
    "sad": ("sad", "sadness", "trauer"),
    "surprise": ("surprise", "surprised", "ps", "pleasant_surprise", "pleasant_surprised", "sur"),
}
_CANONICAL_BY_WORD = {word: emotion for emotion, words in _SYNONYMS.items() for word in words}
CANONICAL_EMOTIONS = tuple(_SYNONYMS)


def canonical_emotion(label: str) -> str | None:
    """Map a corpus' label (``Angry``, ``ps``, ``Pleasant_surprise``, ``fearful``) to the vocabulary, or None."""
    key = re.sub(r"[\s\-]+", "_", label.strip().lower())
    return _CANONICAL_BY_WORD.get(key)


@dataclass(frozen=True)
class Labelled:
    """What a layout reads off a file's path."""

    emotion: str  # canonical
    label: str  # the corpus' own label
    speaker: str  # "" when unknown


class Excluded(Exception):
    """A file that follows the layout but that the corpus' protocol leaves out (e.g. RAVDESS song)."""


@dataclass(frozen=True)
class Layout:
    """A named corpus layout: how to read emotion and speaker off a path relative to the corpus root."""

    name: str
    description: str
    parse: Callable[[PurePosixPath], Labelled | None]  # None: not this layout; raises Excluded


@dataclass(frozen=True)
class Utterance:
    path: str
    emotion: str
    label: str
    speaker: str
    corpus: str
    duration: float
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass
class Corpus:
    """A loaded corpus: its utterances (sorted by path), and what was skipped or excluded, with reasons."""

    name: str
    root: str
    layout: str
    utterances: list[Utterance]
    skipped: list[Skipped] = field(default_factory=list)
    excluded: list[Skipped] = field(default_factory=list)
    #: The member corpora as ``(name, root as given)``: one for a single corpus, several for
    #: :func:`training.corpora.load_corpora`; empty for a Corpus built by hand (then ``(name, root)`` is meant).
    sources: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.utterances)

    @property
    def speakers(self) -> list[str]:
        return sorted({u.speaker for u in self.utterances})

    @property
    def emotions(self) -> list[str]:
        return sorted({u.emotion for u in self.utterances})

    @property
    def has_speakers(self) -> bool:
        return all(u.speaker for u in self.utterances)

    @property
    def hours(self) -> float:
        return sum(u.duration for u in self.utterances) / 3600

    def subset(self, keep: Callable[[Utterance], bool]) -> "Corpus":
        return Corpus(self.name, self.root, self.layout, [u for u in self.utterances if keep(u)],
                      self.skipped, self.excluded, list(self.sources))

    def summary(self) -> str:
        counts = Counter(u.emotion for u in self.utterances)
        speakers = ", ".join(self.speakers) if self.has_speakers else "unknown"
        lines = [
            f"{self.name} ({self.layout} layout, {self.root}): {len(self)} files, {self.hours * 60:.1f} min",
            "  emotions: " + ", ".join(f"{e} {n}" for e, n in sorted(counts.items())),
            f"  speakers: {speakers}",
        ]
        if self.excluded:
            lines.append(f"  excluded by the corpus' protocol: {len(self.excluded)} files "
                         f"({self.excluded[0].reason}, ...)")
        if self.skipped:
            lines.append(f"  skipped: {len(self.skipped)} files")
            lines += [f"    {s.path}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)

    def write_csv(self, path: str | Path) -> Path:
        """Write the manifest (one row per utterance) as CSV; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=[f.name for f in fields(Utterance)])
            writer.writeheader()
            writer.writerows(asdict(u) for u in self.utterances)
        return path

    def write_skipped(self, path: str | Path) -> Path | None:
        if not self.skipped:
            return None
        path = Path(path)
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "reason"])
            writer.writerows((s.path, s.reason) for s in self.skipped)
        return path


def read_manifest_csv(path: str | Path) -> list[Utterance]:
    """Read a manifest written by :meth:`Corpus.write_csv`."""
    with Path(path).open(newline="") as f:
        return [
            Utterance(
                path=row["path"], emotion=row["emotion"], label=row["label"], speaker=row["speaker"],
                corpus=row["corpus"], duration=float(row["duration"]), sample_rate=int(row["sample_rate"]),
                channels=int(row["channels"]),
            )
            for row in csv.DictReader(f)
        ]
