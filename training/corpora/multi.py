"""Several corpora as one: one manifest for a training run over, e.g., EMO-DB and TESS together.

>>> from training.corpora import load_corpora
>>> both = load_corpora(["data/emodb", "/data/tess"], common_emotions=True)
>>> both.name, both.speakers[:2], both.emotions
('emodb+tess', ['emodb:03', 'emodb:08'], ['angry', 'disgust', 'fear', 'happy', 'neutral', 'sad'])

With several corpora, speakers are namespaced ``"{corpus}:{speaker}"`` (so EMO-DB's ``03`` and another
corpus' ``03`` stay two people, and speaker-independent splits stay honest); ``Utterance.corpus`` names each
file's own corpus. :func:`corpus_balance_weights` gives every corpus, and within it every emotion, the same
total weight, so that the larger corpus (TESS: 2800 files against EMO-DB's 535) does not drown the other.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter
from typing import Sequence

import numpy as np

from training.corpora.manifest import Corpus, Utterance

log = logging.getLogger(__name__)


def load_corpora(
    paths: Sequence[str],
    *,
    layouts: Sequence[str] | None = None,
    speaker_regex: str | None = None,
    common_emotions: bool = False,
) -> Corpus:
    """Load every corpus in ``paths`` with :func:`load_corpus` and return them as one :class:`Corpus`.

    One path: exactly what ``load_corpus`` returns (``common_emotions`` then changes nothing). Several:

    - ``name`` is the member names joined with ``+`` (``"emodb+tess"``), ``root`` the paths as given joined
      with :data:`os.pathsep` (``":"`` on POSIX), ``layout`` the member layouts joined with ``+``;
      ``sources`` lists each member's ``(name, path)``.
    - A member whose name another member already has is renamed ``name-2``, ``name-3``, ... (with a warning);
      ``Utterance.corpus`` carries that name.
    - Speakers become ``"{corpus}:{speaker}"``; unknown speakers (``""``) stay unknown.
    - ``skipped`` and ``excluded`` concatenate the members' lists, in the order of ``paths``.
    - ``common_emotions=True`` keeps only the emotions every member has (the others are filtered out and
      logged, not listed as skipped); ValueError if fewer than 2 remain.

    ``layouts``: one layout per path, or a single one for all (default ``"auto"``). ``speaker_regex`` goes to
    every member (note that with layout ``auto`` it selects the ``folders`` layout, as in ``load_corpus``).
    Utterances are ordered by member, then by path.
    """
    from training.corpora import load_corpus  # here: training.corpora imports this module

    paths = [str(p) for p in paths] if not isinstance(paths, (str, os.PathLike)) else [str(paths)]
    if not paths:
        raise ValueError("load_corpora needs at least one corpus path, got none")
    if layouts is None:
        layouts = ["auto"] * len(paths)
    elif isinstance(layouts, str):
        layouts = [layouts] * len(paths)
    elif len(layouts) == 1:
        layouts = list(layouts) * len(paths)
    if len(layouts) != len(paths):
        raise ValueError(f"{len(layouts)} layouts for {len(paths)} corpus paths: give one per path, or one for all")

    corpora = [load_corpus(p, layout=lay, speaker_regex=speaker_regex) for p, lay in zip(paths, layouts)]
    if len(corpora) == 1:
        return corpora[0]

    names = _unique_names([c.name for c in corpora], paths)
    utterances: list[Utterance] = []
    for corpus, name in zip(corpora, names):
        utterances += [
            dataclasses.replace(u, corpus=name, speaker=f"{name}:{u.speaker}" if u.speaker else "")
            for u in corpus.utterances
        ]
    if common_emotions:
        utterances = _keep_common_emotions(utterances, names, [set(c.emotions) for c in corpora])

    return Corpus(
        name="+".join(names),
        root=os.pathsep.join(paths),
        layout="+".join(c.layout for c in corpora),
        utterances=utterances,
        skipped=[s for c in corpora for s in c.skipped],
        excluded=[s for c in corpora for s in c.excluded],
        sources=list(zip(names, paths)),
    )


def _unique_names(names: list[str], paths: list[str]) -> list[str]:
    out: list[str] = []
    for name, path in zip(names, paths):
        unique, k = name, 1
        while unique in out or (unique != name and unique in names):
            k += 1
            unique = f"{name}-{k}"
        if unique != name:
            log.warning("two corpora are both named %r; calling the one at %s %r", name, path, unique)
        out.append(unique)
    return out


def _keep_common_emotions(utterances: list[Utterance], names: list[str], emotions: list[set[str]]) -> list[Utterance]:
    common = set.intersection(*emotions)
    if len(common) < 2:
        have = "; ".join(f"{n}: {', '.join(sorted(e))}" for n, e in zip(names, emotions))
        raise ValueError(
            f"the corpora {', '.join(names)} share {len(common)} emotion(s) "
            f"({', '.join(sorted(common)) or 'none'}); at least 2 are needed to train on the common emotions "
            f"({have})"
        )
    dropped = Counter((u.corpus, u.emotion) for u in utterances if u.emotion not in common)
    if dropped:
        log.info(
            "common emotions %s: leaving out %d files (%s)", ", ".join(sorted(common)), sum(dropped.values()),
            ", ".join(f"{c} {e} {n}" for (c, e), n in sorted(dropped.items())),
        )
    return [u for u in utterances if u.emotion in common]


def corpus_balance_weights(utterances: Sequence[Utterance], labels: Sequence[str]) -> np.ndarray:
    """One weight per utterance so that every corpus (``Utterance.corpus``) carries the same total weight and,
    within a corpus, every label (``labels[i]`` is utterance i's class) does too; mean 1.

    weight = N / (n_corpora * n_labels_in_corpus * count(corpus, label)). With one corpus this is sklearn's
    'balanced' class weight per item, n / (classes * count).
    """
    if len(utterances) != len(labels):
        raise ValueError(f"{len(utterances)} utterances but {len(labels)} labels")
    n = len(utterances)
    if n == 0:
        return np.zeros(0)
    keys = [(u.corpus, label) for u, label in zip(utterances, labels)]
    counts = Counter(keys)
    labels_per_corpus = Counter(corpus for corpus, _ in counts)
    n_corpora = len(labels_per_corpus)
    weights = np.array([n / (n_corpora * labels_per_corpus[c] * counts[(c, e)]) for c, e in keys], dtype=float)
    return weights / weights.mean()
