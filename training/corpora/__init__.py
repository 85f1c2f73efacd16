"""Load an emotional-speech corpus from a folder (or a CSV) into one manifest.

>>> from training.corpora import load_corpus
>>> corpus = load_corpus("data/emodb")          # layout detected from the file names
>>> corpus.layout, len(corpus), corpus.speakers[:3]
('emodb', 535, ['03', '08', '09'])

Named layouts (one module each): EMO-DB, TESS, RAVDESS, CREMA-D, SAVEE; plus ``folders`` (one folder per
emotion) and ``csv`` (a ``path,emotion[,speaker]`` file). Files whose names do not fit the layout or that
cannot be decoded are listed in ``corpus.skipped`` with the reason, and loading goes on.

Several corpora as one (namespaced speakers, optional common emotions): :func:`load_corpora`; per-corpus
balancing weights: :func:`corpus_balance_weights`; licences: :func:`corpus_licence`, :func:`corpus_sources`,
:func:`redistributable`.
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath

from speech_emotion.audio import AUDIO_EXTENSIONS, AudioDecodeError, audio_info
from training.corpora import cremad, csv_manifest, emodb, folders, ravdess, savee, tess
from training.corpora.licences import corpus_licence, corpus_sources, redistributable
from training.corpora.manifest import (
    CANONICAL_EMOTIONS,
    Corpus,
    Excluded,
    Labelled,
    Layout,
    Skipped,
    Utterance,
    canonical_emotion,
    read_manifest_csv,
)
from training.corpora.multi import corpus_balance_weights, load_corpora

__all__ = [
    "CANONICAL_EMOTIONS", "Corpus", "LAYOUTS", "Skipped", "Utterance", "canonical_emotion", "corpus_balance_weights",
    "corpus_licence", "corpus_sources", "detect_layout", "find_audio_files", "load_corpora", "load_corpus",
    "read_manifest_csv", "redistributable",
]

log = logging.getLogger(__name__)

NAMED_LAYOUTS: dict[str, Layout] = {
    layout.name: layout for layout in (emodb.LAYOUT, tess.LAYOUT, ravdess.LAYOUT, cremad.LAYOUT, savee.LAYOUT)
}
#: Every value ``layout=`` accepts.
LAYOUTS = ("auto", *NAMED_LAYOUTS, "folders", "csv")


def find_audio_files(root: Path) -> list[Path]:
    """Audio files under ``root``, recursively, sorted; hidden files (e.g. macOS ``._x.wav``) left out."""
    return sorted(
        p for p in root.rglob("*")
        if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _fits(layout: Layout, rel: PurePosixPath) -> bool:
    try:
        return layout.parse(rel) is not None
    except Excluded:
        return True


def detect_layout(root: Path, files: list[Path]) -> Layout:
    """The named layout that explains most file names, else folder-per-emotion; at least half must fit."""
    rels = [PurePosixPath(f.relative_to(root).as_posix()) for f in files]
    scores = {name: sum(_fits(layout, r) for r in rels) for name, layout in NAMED_LAYOUTS.items()}
    best = max(scores, key=scores.get)
    if scores[best] * 2 >= len(rels) and scores[best] > 0:
        return NAMED_LAYOUTS[best]
    generic = folders.layout()
    if sum(_fits(generic, r) for r in rels) * 2 >= len(rels):
        return generic
    raise ValueError(
        f"{root}: cannot tell the corpus layout from its {len(rels)} audio file names (e.g. {rels[0]}). "
        f"Name it with --layout ({', '.join(LAYOUTS[1:])}), put files in one folder per emotion, "
        f"or write a CSV manifest with columns path,emotion,speaker and pass that instead."
    )


def load_corpus(
    source: str | Path,
    *,
    layout: str = "auto",
    speaker_regex: str | None = None,
    name: str | None = None,
) -> Corpus:
    """Scan ``source`` (a corpus folder, or a CSV manifest) and return its manifest.

    ``layout``: one of :data:`LAYOUTS`. ``speaker_regex`` gives the ``folders`` layout its speakers.
    ``name`` overrides the corpus name (default: the named layout, else the folder's name).
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"corpus not found: {source}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")

    if source.is_file() or layout == "csv":
        if not source.is_file():
            raise ValueError(f"--layout csv needs a CSV file, got the folder {source}")
        entries = csv_manifest.read(source)
        layout_name, corpus_name = "csv", name or source.stem
        skipped, excluded = [], []
    else:
        root = source
        files = find_audio_files(root)
        if not files:
            raise ValueError(f"{root}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) found")
        if layout == "auto":
            chosen = folders.layout(speaker_regex) if speaker_regex else detect_layout(root, files)
        elif layout == "folders":
            chosen = folders.layout(speaker_regex)
        else:
            chosen = NAMED_LAYOUTS[layout]
        layout_name = chosen.name
        corpus_name = name or (layout_name if layout_name in NAMED_LAYOUTS else root.resolve().name)
        entries, skipped, excluded = _parse_names(root, files, chosen)

    utterances: list[Utterance] = []
    for path, labelled in entries:
        try:
            info = audio_info(path)
        except AudioDecodeError as exc:
            skipped.append(Skipped(str(path), str(exc).removeprefix(f"{path}: ")))
            continue
        utterances.append(Utterance(
            path=str(path), emotion=labelled.emotion, label=labelled.label, speaker=labelled.speaker,
            corpus=corpus_name, duration=round(info.duration, 4), sample_rate=info.sample_rate,
            channels=info.channels,
        ))
    for s in skipped:
        log.warning("skipped %s: %s", s.path, s.reason)
    if not utterances:
        raise ValueError(f"{source}: no usable audio files ({len(skipped)} skipped)")
    utterances.sort(key=lambda u: u.path)
    return Corpus(corpus_name, str(source), layout_name, utterances, skipped, excluded,
                  sources=[(corpus_name, str(source))])


def _parse_names(root: Path, files: list[Path], layout: Layout):
    entries: list[tuple[Path, Labelled]] = []
    skipped: list[Skipped] = []
    excluded: list[Skipped] = []
    for path in files:
        rel = PurePosixPath(path.relative_to(root).as_posix())
        try:
            labelled = layout.parse(rel)
        except Excluded as exc:
            excluded.append(Skipped(str(path), str(exc)))
            continue
        if labelled is None:
            skipped.append(Skipped(str(path), f"name does not follow the {layout.name} layout ({layout.description})"))
        else:
            entries.append((path, labelled))
    return entries, skipped, excluded
