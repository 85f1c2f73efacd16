"""Evaluation protocols: which utterances train, which validate, which test.

Every fold has three disjoint index sets. The validation set, used to pick the epoch (checkpoint), always
comes from the training side: from held-out *training* speakers when there are at least three of them,
otherwise from a stratified share of the training utterances. Test speakers never reach it, and nothing
here uses Keras' ``validation_split`` (the last rows of an unshuffled table).

- ``random``: stratified 80/20 utterance split. Speakers appear on both sides: speaker-DEPENDENT.
- ``speaker``: the given test speakers (or a seeded 20 % of them) are held out: speaker-independent.
- ``loso``: leave one speaker out, every speaker in turn; predictions are pooled over folds.
- ``cross-corpus``: train on one corpus, test on another, on the emotions both have.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import train_test_split

from training.corpora.manifest import Utterance

PROTOCOLS = ("random", "speaker", "loso", "cross-corpus")

#: Share of the training pool held out for validation when it is made of utterances, not speakers.
VAL_FRACTION = 0.15
#: Fewest training speakers from which whole speakers are held out for validation.
MIN_SPEAKERS_FOR_SPEAKER_VAL = 3


class ProtocolError(ValueError):
    """The protocol cannot run on this data; the message says what to change."""


@dataclass
class Fold:
    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    test_speakers: list[str] = field(default_factory=list)
    val_speakers: list[str] = field(default_factory=list)  # empty: validation is a share of utterances

    def describe(self) -> dict:
        return {
            "name": self.name, "train": int(len(self.train)), "val": int(len(self.val)),
            "test": int(len(self.test)), "test_speakers": self.test_speakers,
            "validation": (f"speakers {', '.join(self.val_speakers)}" if self.val_speakers
                           else f"{VAL_FRACTION:.0%} of training utterances, stratified by emotion"),
        }


@dataclass
class Plan:
    protocol: str
    speaker_independent: bool
    folds: list[Fold]
    description: str


def _speakers(utts: list[Utterance], idx: np.ndarray) -> list[str]:
    return sorted({utts[i].speaker for i in idx})


def _stratify(utts: list[Utterance], idx: np.ndarray) -> np.ndarray | None:
    labels = [utts[i].emotion for i in idx]
    counts = Counter(labels)
    return np.array(labels) if min(counts.values()) >= 2 else None


def _utterance_val(utts: list[Utterance], pool: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    train, val = train_test_split(pool, test_size=VAL_FRACTION, random_state=seed, stratify=_stratify(utts, pool))
    return np.sort(train), np.sort(val)


def split_validation(
    utts: list[Utterance], pool: np.ndarray, seed: int, *, prefer: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Split a training pool into (train, val, val_speakers); ``prefer`` names the validation speakers."""
    speakers = _speakers(utts, pool) if all(utts[i].speaker for i in pool) else []
    if len(speakers) < MIN_SPEAKERS_FOR_SPEAKER_VAL:
        train, val = _utterance_val(utts, pool, seed)
        return train, val, []
    if prefer is None:
        n_val = max(1, round(VAL_FRACTION * len(speakers)))
        prefer = sorted(np.random.default_rng(seed).choice(speakers, size=n_val, replace=False).tolist())
    is_val = np.array([utts[i].speaker in prefer for i in pool])
    return pool[~is_val], pool[is_val], list(prefer)


def member_validation(
    utts: list[Utterance], pool: np.ndarray, members: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray, list[str]]]:
    """(train, val, val_speakers) for each of ``members`` networks fitted on ``pool``, each validating on a
    group of speakers of its own: the pool's speakers in a seeded order, member ``i`` taking the ``i``-th group
    of as many as :func:`split_validation` holds out (the groups wrap round when there are too few speakers
    for disjoint ones). Too few speakers: each member a stratified share of utterances, with its own seed."""
    speakers = _speakers(utts, pool) if all(utts[i].speaker for i in pool) else []
    if len(speakers) < MIN_SPEAKERS_FOR_SPEAKER_VAL:
        return [split_validation(utts, pool, seed + i) for i in range(members)]
    n_val = max(1, round(VAL_FRACTION * len(speakers)))
    order = [str(s) for s in np.random.default_rng(seed).permutation(speakers)]
    return [split_validation(utts, pool, seed, prefer=sorted(order[(i * n_val + j) % len(order)]
                                                               for j in range(n_val)))
            for i in range(members)]


def _require_speakers(utts: list[Utterance], protocol: str) -> list[str]:
    if not all(u.speaker for u in utts):
        raise ProtocolError(
            f"protocol {protocol!r} holds out speakers, but this corpus has files without a speaker. "
            "Give speakers (a named layout, --speaker-regex, or a 'speaker' column in a CSV manifest), "
            "or use --protocol random (speaker-dependent, optimistic)."
        )
    speakers = sorted({u.speaker for u in utts})
    if len(speakers) < 2:
        raise ProtocolError(f"protocol {protocol!r} needs at least 2 speakers; this corpus has {len(speakers)}")
    return speakers


def random_split(utts: list[Utterance], *, seed: int = 0, test_fraction: float = 0.2) -> Plan:
    idx = np.arange(len(utts))
    pool, test = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=_stratify(utts, idx))
    train, val = _utterance_val(utts, np.sort(pool), seed)
    fold = Fold("random", train, val, np.sort(test))
    return Plan("random", False, [fold],
                f"stratified random {1 - test_fraction:.0%}/{test_fraction:.0%} utterance split, seed {seed}; "
                "the same speakers are in train and test (speaker-dependent)")


def speaker_split(
    utts: list[Utterance], *, seed: int = 0, test_speakers: list[str] | None = None, test_fraction: float = 0.2
) -> Plan:
    speakers = _require_speakers(utts, "speaker")
    if test_speakers:
        unknown = sorted(set(test_speakers) - set(speakers))
        if unknown:
            raise ProtocolError(f"test speaker(s) {', '.join(unknown)} not in the corpus ({', '.join(speakers)})")
    else:
        n = max(1, round(test_fraction * len(speakers)))
        test_speakers = sorted(np.random.default_rng(seed).choice(speakers, size=n, replace=False).tolist())
    is_test = np.array([u.speaker in test_speakers for u in utts])
    idx = np.arange(len(utts))
    if is_test.all():
        raise ProtocolError("every speaker is a test speaker; leave at least one for training")
    train, val, val_speakers = split_validation(utts, idx[~is_test], seed)
    fold = Fold("test=" + "+".join(test_speakers), train, val, idx[is_test], list(test_speakers), val_speakers)
    return Plan("speaker", True, [fold], f"held-out test speakers {', '.join(test_speakers)}, seed {seed}")


def leave_one_speaker_out(utts: list[Utterance], *, seed: int = 0) -> Plan:
    speakers = _require_speakers(utts, "loso")
    idx = np.arange(len(utts))
    folds = []
    for k, test_speaker in enumerate(speakers):
        is_test = np.array([u.speaker == test_speaker for u in utts])
        # Rotate the validation speaker so each speaker validates once: the next one after the test speaker.
        rest = [s for s in speakers if s != test_speaker]
        prefer = [rest[(k + seed) % len(rest)]] if len(rest) >= MIN_SPEAKERS_FOR_SPEAKER_VAL else None
        train, val, val_speakers = split_validation(utts, idx[~is_test], seed, prefer=prefer)
        folds.append(Fold(f"test={test_speaker}", train, val, idx[is_test], [test_speaker], val_speakers))
    return Plan("loso", True, folds,
                f"leave one speaker out over {len(speakers)} speakers, predictions pooled, seed {seed}")


def cross_corpus(train_utts: list[Utterance], test_utts: list[Utterance], *, seed: int = 0
                 ) -> tuple[Plan, list[Utterance]]:
    """Returns the plan over the concatenation ``train_utts + test_utts`` restricted to shared emotions."""
    shared = sorted({u.emotion for u in train_utts} & {u.emotion for u in test_utts})
    if len(shared) < 2:
        raise ProtocolError("cross-corpus needs at least 2 emotions shared by both corpora; shared: "
                            + (", ".join(shared) or "none"))
    a = [u for u in train_utts if u.emotion in shared]
    b = [u for u in test_utts if u.emotion in shared]
    utts = a + b
    train, val, val_speakers = split_validation(utts, np.arange(len(a)), seed)
    name_a, name_b = a[0].corpus, b[0].corpus
    fold = Fold(f"{name_a}->{name_b}", train, val, np.arange(len(a), len(utts)), sorted({u.speaker for u in b}),
                val_speakers)
    return Plan("cross-corpus", True, [fold],
                f"train on {name_a}, test on {name_b}, shared emotions {', '.join(shared)}, seed {seed}"), utts
