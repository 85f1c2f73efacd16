"""Protocols: test speakers never reach training or validation; every utterance is tested where promised."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import BUNDLED
from training.corpora import Utterance, load_corpus
from training.protocols import (ProtocolError, cross_corpus, leave_one_speaker_out, member_validation, random_split,
                                speaker_split)


@pytest.fixture(scope="module")
def emodb():
    return load_corpus(BUNDLED).utterances


def _speakers(utts, idx):
    return {utts[i].speaker for i in idx}


def _disjoint(fold):
    sets = [set(fold.train.tolist()), set(fold.val.tolist()), set(fold.test.tolist())]
    return not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])


def test_loso_tests_every_speaker_once_and_validates_on_training_speakers(emodb):
    plan = leave_one_speaker_out(emodb, seed=0)
    assert plan.speaker_independent and len(plan.folds) == 10
    tested = np.concatenate([f.test for f in plan.folds])
    assert sorted(tested.tolist()) == list(range(len(emodb)))
    val_speakers = []
    for fold in plan.folds:
        assert _disjoint(fold)
        (test_speaker,) = _speakers(emodb, fold.test)
        assert test_speaker not in _speakers(emodb, fold.train) | _speakers(emodb, fold.val)
        assert fold.val_speakers and not (_speakers(emodb, fold.val) & _speakers(emodb, fold.train))
        val_speakers += fold.val_speakers
        assert len(fold.train) + len(fold.val) + len(fold.test) == len(emodb)
    assert sorted(val_speakers) == sorted({u.speaker for u in emodb}), "each speaker validates once"


def test_members_validate_on_speaker_groups_of_their_own(emodb):
    """member_validation: each member of an ensemble holds out its own group of the pool's speakers (disjoint
    while there are enough), trains on the other speakers and never on its own validation speakers."""
    pool = np.arange(len(emodb))
    splits = member_validation(emodb, pool, 3, seed=0)
    groups = [tuple(split[2]) for split in splits]
    assert all(len(g) == 2 for g in groups) and len(set(sum(groups, ()))) == 6, groups
    for train, val, speakers in splits:
        assert _speakers(emodb, val) == set(speakers) and not (_speakers(emodb, train) & set(speakers))
        assert sorted(np.concatenate([train, val]).tolist()) == pool.tolist()
    assert [s[2] for s in member_validation(emodb, pool, 3, seed=0)] == [list(g) for g in groups], "seeded"
    assert [s[2] for s in member_validation(emodb, pool, 3, seed=1)] != [list(g) for g in groups]
    # more members than disjoint groups: the groups wrap round, each still of two speakers
    assert all(len(s[2]) == 2 for s in member_validation(emodb, pool, 6, seed=0))
    # too few speakers: each member validates on its own share of utterances
    two = np.array([i for i, u in enumerate(emodb) if u.speaker in ("03", "08")])
    (a_train, a_val, a_spk), (b_train, b_val, b_spk) = member_validation(emodb, two, 2, seed=0)
    assert a_spk == b_spk == [] and set(a_val.tolist()) != set(b_val.tolist())


def test_speaker_split_with_two_speakers_validates_on_training_utterances(emodb):
    two = [u for u in emodb if u.speaker in ("03", "08")]
    plan = speaker_split(two, test_speakers=["08"], seed=1)
    (fold,) = plan.folds
    assert _disjoint(fold) and fold.val_speakers == []
    assert _speakers(two, fold.test) == {"08"}
    assert _speakers(two, fold.train) == _speakers(two, fold.val) == {"03"}


def test_speaker_split_defaults_to_a_seeded_fifth_of_speakers(emodb):
    a, b = speaker_split(emodb, seed=0), speaker_split(emodb, seed=0)
    assert a.folds[0].test_speakers == b.folds[0].test_speakers and len(a.folds[0].test_speakers) == 2
    with pytest.raises(ProtocolError, match="not in the corpus"):
        speaker_split(emodb, test_speakers=["99"])


def test_random_split_is_stratified_and_speaker_dependent(emodb):
    plan = random_split(emodb, seed=0)
    (fold,) = plan.folds
    assert not plan.speaker_independent and _disjoint(fold)
    assert len(fold.test) == pytest.approx(0.2 * len(emodb), abs=1)
    test_emotions = {emodb[i].emotion for i in fold.test}
    assert test_emotions == {u.emotion for u in emodb}


def test_cross_corpus_uses_shared_emotions_only(emodb):
    other = [Utterance(f"/x/{i}.wav", e, e, "A", "other", 1.0, 16000, 1)
             for i, e in enumerate(["angry", "happy", "surprise", "calm"] * 3)]
    plan, utts = cross_corpus(emodb, other, seed=0)
    (fold,) = plan.folds
    assert {u.emotion for u in utts} == {"angry", "happy"}
    assert {utts[i].corpus for i in fold.test} == {"other"}
    assert {utts[i].corpus for i in np.concatenate([fold.train, fold.val])} == {"emodb"}


def test_speaker_protocols_refuse_unknown_speakers():
    utts = [Utterance(f"/x/{i}.wav", "angry" if i % 2 else "sad", "x", "", "c", 1.0, 16000, 1) for i in range(20)]
    with pytest.raises(ProtocolError, match="--protocol random"):
        leave_one_speaker_out(utts)
    assert len(random_split(utts).folds) == 1
