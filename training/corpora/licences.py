"""What licence a corpus comes under, and what that means for a model trained on it.

>>> corpus_licence("data/emodb", "emodb")      # read off data/emodb/LICENSE
'CC0-1.0'
>>> corpus_licence("/data/tess", "tess")       # no licence file: known corpus name
'CC-BY-NC-ND-4.0'
>>> redistributable("CC-BY-NC-ND-4.0")
False

:func:`corpus_sources` describes the member corpora of a :class:`Corpus` (name, path, licence, counts) in a
JSON-serialisable form, for a model's ``metadata.json``.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from training.corpora.manifest import Corpus

#: Licence file names looked for at a corpus root (matched case-insensitively).
LICENCE_FILES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE", "LICENCE.txt", "LICENCE.md", "COPYING")

#: Licences of the corpora whose layouts we know, used when the corpus folder carries no licence file.
KNOWN_CORPUS_LICENCES = {
    "emodb": "CC0-1.0",  # as published by audEERING (whose team includes the corpus' first author)
    "tess": "CC-BY-NC-ND-4.0",
    "ravdess": "CC-BY-NC-SA-4.0",
    "cremad": "ODbL-1.0",
    "savee": "unknown (free for research)",
}

#: Licences under which a model trained on the corpus may be redistributed, commercially included, without
#: restriction beyond attribution. Deliberately conservative:
#: - CC0-1.0 waives every right; CC-BY-4.0 only asks for attribution (credit the corpus in the model card).
#: - NC (NonCommercial) licences forbid commercial use, and a shipped model is such a use.
#: - ND (NoDerivatives) licences forbid sharing adapted material; whether trained weights are an adaptation is
#:   legally unsettled, so we treat them as one.
#: - SA (ShareAlike) would impose the corpus' licence on the model; not "without restriction", so False.
#: - ODbL, "unknown" and anything unrecognised: False until a person has read the terms.
REDISTRIBUTABLE = frozenset({"CC0-1.0", "CC-BY-4.0"})

_SEP = r"[\s_\-/]*"
_VERSION = re.compile(r"(\d)\.(\d)")
# (SPDX id without version, pattern); several may match a text: the one appearing first wins, then the
# more specific one (order of this list). The version is read just after the match (default 4.0).
_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("CC0", re.compile(r"\bcc0\b|\bcc[\s_\-]*zero\b|creative\s+commons\s+zero|public\s+domain\s+dedication"
                       r"|publicdomain/zero", re.IGNORECASE)),
    ("CC-BY-NC-ND", re.compile(rf"\bby{_SEP}nc{_SEP}nd\b|attribution{_SEP}non{_SEP}commercial{_SEP}no{_SEP}deriv",
                               re.IGNORECASE)),
    ("CC-BY-NC-SA", re.compile(rf"\bby{_SEP}nc{_SEP}sa\b|attribution{_SEP}non{_SEP}commercial{_SEP}share{_SEP}alike",
                               re.IGNORECASE)),
    ("CC-BY-NC", re.compile(rf"\bby{_SEP}nc\b(?!{_SEP}(nd|sa)\b)|attribution{_SEP}non{_SEP}commercial\s+\d",
                            re.IGNORECASE)),
    ("CC-BY-SA", re.compile(rf"\bcc{_SEP}by{_SEP}sa\b|licenses/by-sa/|attribution{_SEP}share{_SEP}alike",
                            re.IGNORECASE)),
    ("CC-BY", re.compile(rf"\bcc{_SEP}by\b(?!{_SEP}(nc|sa|nd)\b)|licenses/by/|creative\s+commons\s+attribution\s+\d",
                         re.IGNORECASE)),
]


def licence_from_text(text: str) -> str | None:
    """The SPDX id of the licence a LICENSE text states (CC0 and the CC BY family), or None."""
    found: list[tuple[int, int, str]] = []
    for rank, (spdx, pattern) in enumerate(_PATTERNS):
        m = pattern.search(text)
        if m:
            found.append((m.start(), rank, spdx))
    if not found:
        return None
    start, _, spdx = min(found)
    if spdx == "CC0":
        return "CC0-1.0"
    version = _VERSION.search(text, start, start + 80)
    return f"{spdx}-{version[1]}.{version[2]}" if version else f"{spdx}-4.0"


def _licence_file(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    by_name = {p.name.lower(): p for p in folder.iterdir() if p.is_file()}
    for name in LICENCE_FILES:
        if name.lower() in by_name:
            return by_name[name.lower()]
    return None


def _known_name(name: str) -> str:
    name = re.sub(r"-\d+$", "", name.strip().lower())  # "emodb-2": a second copy, disambiguated by load_corpora
    return re.sub(r"[^a-z0-9]", "", name)


def corpus_licence(root: str | Path, name: str) -> str:
    """The licence (SPDX-like id) of the corpus at ``root`` (a folder, or a CSV manifest: its folder).

    A ``LICENSE``/``LICENCE`` file at the root decides when its text names CC0-1.0 or CC-BY(-NC)(-ND|-SA)-4.0;
    otherwise the corpus' name does (emodb, tess, ravdess, cremad, savee); otherwise ``"unknown"``.
    """
    root = Path(root)
    folder = root.parent if root.is_file() else root
    path = _licence_file(folder)
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        licence = licence_from_text(text)
        if licence:
            return licence
    return KNOWN_CORPUS_LICENCES.get(_known_name(name), "unknown")


def redistributable(licence: str) -> bool:
    """True only for CC0-1.0 and CC-BY-4.0: a model trained on such data may be shipped, commercially too,
    without restrictions (beyond attribution). See :data:`REDISTRIBUTABLE` for why NC, ND, SA are False."""
    return licence.strip() in REDISTRIBUTABLE


def corpus_sources(corpus: Corpus) -> list[dict]:
    """One JSON-serialisable entry per member corpus of ``corpus``: ``name``, ``path`` (as given), ``licence``,
    ``utterances`` (count), ``speakers`` (the corpus' own speaker ids, sorted; without the ``name:`` prefix
    :func:`load_corpora` adds) and ``emotions`` (utterances per emotion). Counts are of ``corpus`` as it is now
    (after any filtering)."""
    members = corpus.sources or [(corpus.name, corpus.root)]
    single = len(members) == 1
    entries = []
    for name, path in members:
        utts = corpus.utterances if single else [u for u in corpus.utterances if u.corpus == name]
        prefix = f"{name}:"
        speakers = sorted({u.speaker.removeprefix(prefix) for u in utts if u.speaker})
        entries.append({
            "name": name,
            "path": path,
            "licence": corpus_licence(path, name),
            "utterances": len(utts),
            "speakers": speakers,
            "emotions": dict(sorted(Counter(u.emotion for u in utts).items())),
        })
    return entries
