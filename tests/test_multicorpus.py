"""Several corpora in one run: load_corpora, licences and corpus_sources, per-corpus balancing weights."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import BUNDLED, shared_corpus, write_audio
from training.corpora import (
    Utterance,
    corpus_balance_weights,
    corpus_licence,
    corpus_sources,
    load_corpora,
    load_corpus,
    redistributable,
)
from training.corpora.licences import licence_from_text

# happy, angry, angry, sad, boredom
EMODB_NAMES = ["03a01Fa.wav", "03a01Wa.wav", "08a01Wa.wav", "08a02Ta.wav", "03a05La.wav"]
TESS_NAMES = ["OAF_angry/OAF_back_angry.wav", "OAF_sad/OAF_back_sad.wav", "YAF_sad/YAF_bar_sad.wav",
              "YAF_happy/YAF_bar_happy.wav", "OAF_Pleasant_surprise/OAF_bar_ps.wav"]


def _emodb(root: Path, names=EMODB_NAMES, corrupt: bool = True) -> Path:
    for i, name in enumerate(names):
        write_audio(root / "wav" / name, seconds=0.2, seed=i)
    if corrupt:
        (root / "wav" / "09a01Na.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    return root


def _tess(root: Path, names=TESS_NAMES, corrupt: bool = True) -> Path:
    for i, name in enumerate(names):
        write_audio(root / name, seconds=0.2, sr=24414, seed=i)
    if corrupt:
        (root / "OAF_fear" / "OAF_dog_fear.wav").parent.mkdir(parents=True, exist_ok=True)
        (root / "OAF_fear" / "OAF_dog_fear.wav").write_bytes(b"")
    return root


@pytest.fixture
def two(tmp_path):
    return _emodb(tmp_path / "emo"), _tess(tmp_path / "toronto")


def test_single_path_is_load_corpus(tmp_path):
    path = _emodb(tmp_path / "emo")
    one, ref = load_corpora([str(path)]), load_corpus(path)
    assert one == ref, "same dataclass fields: name, root, layout, utterances, skipped, excluded, sources"
    assert (one.name, one.speakers, one.root) == ("emodb", ["03", "08"], str(path))
    assert one.sources == [("emodb", str(path))]
    assert load_corpora([str(path)], common_emotions=True).utterances == ref.utterances


def test_single_bundled_path_is_load_corpus():
    one, ref = load_corpora([str(BUNDLED)]), load_corpus(BUNDLED)
    assert one.utterances == ref.utterances and one.speakers == ref.speakers and one.name == ref.name == "emodb"
    assert len(one.speakers) == 10 and not any(":" in s for s in one.speakers)


def test_two_corpora_namespaced_speakers_and_concatenated_skips(two):
    emo, tess = two
    both = load_corpora([str(emo), str(tess)])
    assert both.name == "emodb+tess" and both.layout == "emodb+tess"
    assert both.root == f"{emo}{os.pathsep}{tess}"
    assert both.sources == [("emodb", str(emo)), ("tess", str(tess))]
    assert len(both) == len(EMODB_NAMES) + len(TESS_NAMES)
    assert both.speakers == ["emodb:03", "emodb:08", "tess:OAF", "tess:YAF"]
    assert Counter(u.corpus for u in both.utterances) == {"emodb": 5, "tess": 5}
    by_name = {Path(u.path).name: u for u in both.utterances}
    assert (by_name["03a01Fa.wav"].speaker, by_name["03a01Fa.wav"].corpus, by_name["03a01Fa.wav"].label) == (
        "emodb:03", "emodb", "F")
    assert by_name["OAF_bar_ps.wav"].emotion == "surprise" and by_name["OAF_bar_ps.wav"].speaker == "tess:OAF"
    assert [Path(s.path).name for s in both.skipped] == ["09a01Na.wav", "OAF_dog_fear.wav"]
    assert both.emotions == ["angry", "boredom", "happy", "sad", "surprise"]
    assert "emodb+tess" in both.summary()


def test_same_speaker_id_in_two_corpora_stays_two_speakers(tmp_path, caplog):
    a = _emodb(tmp_path / "a", corrupt=False)
    b = _emodb(tmp_path / "b", ["03a02Wa.wav", "03a02Ta.wav"], corrupt=False)
    with caplog.at_level(logging.WARNING, logger="training.corpora.multi"):
        both = load_corpora([str(a), str(b)])
    assert both.name == "emodb+emodb-2"
    assert both.sources == [("emodb", str(a)), ("emodb-2", str(b))]
    assert both.speakers == ["emodb-2:03", "emodb:03", "emodb:08"]
    assert Counter(u.corpus for u in both.utterances) == {"emodb": 5, "emodb-2": 2}
    assert any("emodb-2" in r.getMessage() for r in caplog.records)


def test_common_emotions_keeps_the_intersection(two, caplog):
    with caplog.at_level(logging.INFO, logger="training.corpora.multi"):
        both = load_corpora([str(p) for p in two], common_emotions=True)
    assert both.emotions == ["angry", "happy", "sad"]
    assert Counter((u.corpus, u.emotion) for u in both.utterances) == {
        ("emodb", "angry"): 2, ("emodb", "happy"): 1, ("emodb", "sad"): 1,
        ("tess", "angry"): 1, ("tess", "happy"): 1, ("tess", "sad"): 2,
    }
    assert len(both.skipped) == 2, "filtered emotions are not skipped files"
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "emodb boredom 1" in message and "tess surprise 1" in message


def test_common_emotions_needs_two(tmp_path):
    emo = _emodb(tmp_path / "emo", ["03a01Wa.wav", "03a05La.wav"], corrupt=False)  # angry, boredom
    tess = _tess(tmp_path / "tess", ["OAF_angry/OAF_back_angry.wav", "OAF_ps/OAF_back_ps.wav"], corrupt=False)
    assert load_corpora([str(emo), str(tess)]).emotions == ["angry", "boredom", "surprise"]
    with pytest.raises(ValueError, match=r"share 1 emotion.*angry.*at least 2"):
        load_corpora([str(emo), str(tess)], common_emotions=True)


def test_empty_paths_and_mismatched_layouts(two):
    with pytest.raises(ValueError, match="at least one corpus path"):
        load_corpora([])
    with pytest.raises(ValueError, match="one per path"):
        load_corpora([str(p) for p in two], layouts=["emodb", "tess", "auto"])
    both = load_corpora([str(p) for p in two], layouts=["emodb", "tess"])
    assert both.layout == "emodb+tess"


def test_licences_of_bundled_emodb_and_a_tess_copy(tmp_path):
    tess = _tess(tmp_path / "toronto", corrupt=False)
    assert corpus_licence(BUNDLED, "emodb") == "CC0-1.0"
    assert corpus_licence(BUNDLED, "whatever") == "CC0-1.0", "the LICENSE file decides, not the name"
    assert corpus_licence(tess, "tess") == "CC-BY-NC-ND-4.0", "no LICENSE file: known corpus name"
    assert corpus_licence(tess, "tess-2") == "CC-BY-NC-ND-4.0"
    assert corpus_licence(tmp_path, "my-recordings") == "unknown"
    assert (redistributable("CC0-1.0"), redistributable("CC-BY-NC-ND-4.0")) == (True, False)

    both = load_corpora([str(BUNDLED), str(tess)])
    sources = corpus_sources(both)
    assert json.loads(json.dumps(sources)) == sources, "JSON-serialisable as is"
    emo, tes = sources
    assert (emo["name"], emo["path"], emo["licence"], emo["utterances"]) == ("emodb", str(BUNDLED), "CC0-1.0", 535)
    assert len(emo["speakers"]) == 10 and emo["speakers"][0] == "03"
    assert sum(emo["emotions"].values()) == 535 and emo["emotions"]["boredom"] == 81
    assert (tes["name"], tes["licence"], tes["utterances"], tes["speakers"]) == (
        "tess", "CC-BY-NC-ND-4.0", 5, ["OAF", "YAF"])
    assert tes["emotions"] == {"angry": 1, "happy": 1, "sad": 2, "surprise": 1}
    assert [redistributable(s["licence"]) for s in sources] == [True, False]


def test_corpus_sources_of_one_corpus_and_of_a_hand_made_one():
    corpus = load_corpus(BUNDLED)
    [entry] = corpus_sources(corpus)
    assert (entry["name"], entry["path"], entry["licence"], entry["utterances"]) == ("emodb", str(BUNDLED),
                                                                                     "CC0-1.0", 535)
    [sub] = corpus_sources(corpus.subset(lambda u: u.emotion == "angry"))
    assert sub["utterances"] == 127 and sub["emotions"] == {"angry": 127}
    from training.corpora import Corpus
    [bare] = corpus_sources(Corpus("tess", "/nowhere", "tess", []))
    assert (bare["licence"], bare["utterances"], bare["speakers"], bare["emotions"]) == ("CC-BY-NC-ND-4.0", 0, [], {})


@pytest.mark.parametrize("text, spdx", [
    ("CC0 1.0 Universal", "CC0-1.0"),
    ("Creative Commons Zero", "CC0-1.0"),
    ("Public Domain Dedication", "CC0-1.0"),
    ("Attribution-NonCommercial-NoDerivatives 4.0 International", "CC-BY-NC-ND-4.0"),
    ("Licensed under CC BY-NC-ND 4.0.", "CC-BY-NC-ND-4.0"),
    ("https://creativecommons.org/licenses/by-nc-sa/4.0/", "CC-BY-NC-SA-4.0"),
    ("Creative Commons Attribution-ShareAlike 4.0 International", "CC-BY-SA-4.0"),
    ("Creative Commons Attribution 4.0 International Public License", "CC-BY-4.0"),
    ("CC-BY-4.0", "CC-BY-4.0"),
    ("All rights reserved.", None),
])
def test_licence_texts(text, spdx):
    assert licence_from_text(text) == spdx


def test_licence_file_overrides_the_name(tmp_path):
    (tmp_path / "LICENCE").write_text("This corpus is released under CC BY 4.0 (attribution required).\n")
    assert corpus_licence(tmp_path, "tess") == "CC-BY-4.0"
    (tmp_path / "LICENCE").write_text("Ask us first.\n")
    assert corpus_licence(tmp_path, "tess") == "CC-BY-NC-ND-4.0", "unrecognised text: fall back on the name"


@pytest.mark.parametrize("licence, ok", [
    ("CC0-1.0", True), ("CC-BY-4.0", True), ("CC-BY-SA-4.0", False), ("CC-BY-NC-SA-4.0", False),
    ("CC-BY-NC-ND-4.0", False), ("ODbL-1.0", False), ("unknown", False), ("unknown (free for research)", False),
])
def test_redistributable(licence, ok):
    assert redistributable(licence) is ok


def _utt(corpus: str, emotion: str, i: int) -> Utterance:
    return Utterance(f"/{corpus}/{i}.wav", emotion, emotion, "s", corpus, 1.0, 16000, 1)


def test_balance_weights_equalise_corpora_and_emotions_within():
    spec = {("big", "angry"): 60, ("big", "sad"): 20, ("big", "happy"): 10, ("small", "angry"): 3, ("small", "sad"): 7}
    utts = [_utt(c, e, i) for (c, e), n in spec.items() for i in range(n)]
    labels = [u.emotion for u in utts]
    w = corpus_balance_weights(utts, labels)
    assert w.shape == (len(utts),) and np.all(w > 0)
    assert w.mean() == pytest.approx(1.0)
    corpus = np.array([u.corpus for u in utts])
    assert w[corpus == "big"].sum() == pytest.approx(w[corpus == "small"].sum())
    for name in ("big", "small"):
        totals = {e: w[(corpus == name) & (np.array(labels) == e)].sum() for c, e in spec if c == name}
        assert np.allclose(list(totals.values()), next(iter(totals.values()))), totals
    # the formula, spelled out: N / (corpora * emotions in corpus * count)
    n = len(utts)
    assert w[0] == pytest.approx(n / (2 * 3 * 60)) and w[-1] == pytest.approx(n / (2 * 2 * 7))


def test_balance_weights_use_the_given_labels_not_the_emotion_field():
    utts = [_utt("a", "angry", i) for i in range(4)]
    w = corpus_balance_weights(utts, ["x", "x", "x", "y"])
    assert w[:3].sum() == pytest.approx(w[3])


def test_balance_weights_of_one_corpus_are_class_weights():
    from training.fitting import class_weights

    corpus = load_corpus(BUNDLED)
    classes = corpus.emotions
    y = np.array([classes.index(u.emotion) for u in corpus.utterances])
    expected = class_weights(y, len(classes))[y]
    got = corpus_balance_weights(corpus.utterances, [u.emotion for u in corpus.utterances])
    assert np.allclose(got, expected)
    assert len(set(np.round(got, 9))) == len(classes) > 1, "not trivially uniform"


def test_balance_weights_length_mismatch():
    with pytest.raises(ValueError, match="labels"):
        corpus_balance_weights([_utt("a", "angry", 0)], [])
    assert corpus_balance_weights([], []).shape == (0,)


def test_shared_emodb_and_tess_together():
    emo, tess = shared_corpus("emodb"), shared_corpus("tess")
    both = load_corpora([str(emo), str(tess)])
    assert both.name == "emodb+tess"
    assert len(both) == 535 + 2800 - len(both.skipped)
    assert len(both.speakers) == 12
    assert {s.split(":")[0] for s in both.speakers} == {"emodb", "tess"}
    [e, t] = corpus_sources(both)
    assert (e["licence"], t["licence"]) == ("CC0-1.0", "CC-BY-NC-ND-4.0")
    assert (e["utterances"], t["utterances"]) == (535, 2800)

    common = load_corpora([str(emo), str(tess)], common_emotions=True)
    assert common.emotions == ["angry", "disgust", "fear", "happy", "neutral", "sad"]
    assert len(common) == len(both) - 81 - 400, "EMO-DB's boredom and TESS's pleasant surprise left out"
    w = corpus_balance_weights(common.utterances, [u.emotion for u in common.utterances])
    corpus = np.array([u.corpus for u in common.utterances])
    assert w[corpus == "emodb"].sum() == pytest.approx(w[corpus == "tess"].sum())
