"""Corpus layouts: real file names of each corpus over tiny generated audio, plus the real corpora."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import BUNDLED, shared_corpus
from training.corpora import load_corpus, read_manifest_csv
from training.corpora.manifest import canonical_emotion


def _by_name(corpus):
    return {Path(u.path).name: u for u in corpus.utterances}


def test_emodb_layout(tmp_path, make_audio):
    for name in ["03a01Fa.wav", "03a01Wa.wav", "10b09Lb.wav", "16a05Tc.wav"]:
        make_audio(tmp_path / "wav" / name)
    corpus = load_corpus(tmp_path)
    assert corpus.layout == "emodb" and corpus.name == "emodb"
    u = _by_name(corpus)
    assert (u["03a01Fa.wav"].emotion, u["03a01Fa.wav"].label, u["03a01Fa.wav"].speaker) == ("happy", "F", "03")
    assert (u["10b09Lb.wav"].emotion, u["10b09Lb.wav"].speaker) == ("boredom", "10")
    assert u["16a05Tc.wav"].emotion == "sad" and u["03a01Wa.wav"].emotion == "angry"
    assert u["03a01Fa.wav"].duration == pytest.approx(1.0) and u["03a01Fa.wav"].sample_rate == 16000


def test_tess_layout_with_its_quirks(tmp_path, make_audio):
    """Kaggle folder names in mixed case, a damaged speaker prefix, AIFF data behind .wav, a 96 kHz file."""
    make_audio(tmp_path / "OAF_angry" / "OAF_back_angry.wav", sr=24414)
    make_audio(tmp_path / "OAF_Pleasant_surprise" / "OAF_bar_ps.wav", sr=24414)
    make_audio(tmp_path / "YAF_pleasant_surprised" / "YAF_bar_ps.wav", sr=24414)
    make_audio(tmp_path / "OAF_neutral" / "OA_bite_neutral.wav", sr=24414)
    make_audio(tmp_path / "OAF_Fear" / "OAF_food_fear.flac", sr=96000)
    make_audio(tmp_path / "YAF_angry" / "YAF_germ_angry.wav", sr=24414, format="AIFF")
    corpus = load_corpus(tmp_path)
    assert corpus.layout == "tess" and not corpus.skipped
    u = _by_name(corpus)
    assert (u["OAF_bar_ps.wav"].emotion, u["OAF_bar_ps.wav"].label) == ("surprise", "ps")
    assert u["YAF_bar_ps.wav"].speaker == "YAF"
    assert u["OA_bite_neutral.wav"].speaker == "OAF", "speaker falls back to the folder's prefix"
    assert u["OAF_food_fear.flac"].sample_rate == 96000
    assert u["YAF_germ_angry.wav"].emotion == "angry" and u["YAF_germ_angry.wav"].duration == pytest.approx(1.0)
    assert corpus.speakers == ["OAF", "YAF"]


def test_ravdess_keeps_speech_only(tmp_path, make_audio):
    make_audio(tmp_path / "Actor_12" / "03-01-05-01-02-02-12.wav")
    make_audio(tmp_path / "Actor_01" / "03-01-02-02-01-01-01.wav")
    make_audio(tmp_path / "Actor_01" / "03-02-03-01-01-01-01.wav")  # song: excluded
    corpus = load_corpus(tmp_path)
    assert corpus.layout == "ravdess"
    u = _by_name(corpus)
    assert (u["03-01-05-01-02-02-12.wav"].emotion, u["03-01-05-01-02-02-12.wav"].speaker) == ("angry", "12")
    assert u["03-01-02-02-01-01-01.wav"].emotion == "calm"
    assert "03-02-03-01-01-01-01.wav" not in u and len(corpus.excluded) == 1 and not corpus.skipped


def test_cremad_layout(tmp_path, make_audio):
    for name in ["1001_DFA_ANG_XX.wav", "1091_TSI_HAP_HI.wav", "1045_IEO_FEA_LO.wav"]:
        make_audio(tmp_path / "AudioWAV" / name)
    corpus = load_corpus(tmp_path)
    u = _by_name(corpus)
    assert corpus.layout == "cremad"
    assert (u["1001_DFA_ANG_XX.wav"].emotion, u["1001_DFA_ANG_XX.wav"].speaker) == ("angry", "1001")
    assert u["1045_IEO_FEA_LO.wav"].emotion == "fear" and u["1091_TSI_HAP_HI.wav"].speaker == "1091"


@pytest.mark.parametrize("names", [
    ["DC_a01.wav", "JE_sa02.wav", "KL_su15.wav", "JK_n30.wav"],
    ["DC/a01.wav", "JE/sa02.wav", "KL/su15.wav", "JK/n30.wav"],
])
def test_savee_flat_and_folder_layouts(tmp_path, make_audio, names):
    for name in names:
        make_audio(tmp_path / name)
    corpus = load_corpus(tmp_path)
    assert corpus.layout == "savee"
    got = sorted((u.speaker, u.emotion, u.label) for u in corpus.utterances)
    assert got == [("DC", "angry", "a"), ("JE", "sad", "sa"), ("JK", "neutral", "n"), ("KL", "surprise", "su")]


def test_generic_folders_with_and_without_speakers(tmp_path, make_audio):
    make_audio(tmp_path / "Angry" / "spk1_take1.wav")
    make_audio(tmp_path / "03-happy" / "spk2_take1.wav")
    make_audio(tmp_path / "sadness" / "spk1_take2.ogg", format="OGG", subtype="VORBIS")
    corpus = load_corpus(tmp_path)
    assert corpus.layout == "folders" and corpus.name == tmp_path.name
    assert sorted(u.emotion for u in corpus.utterances) == ["angry", "happy", "sad"]
    assert not corpus.has_speakers
    with_speakers = load_corpus(tmp_path, speaker_regex=r"/(?P<speaker>spk\d)_")
    assert sorted(u.speaker for u in with_speakers.utterances) == ["spk1", "spk1", "spk2"]


def test_csv_manifest(tmp_path, make_audio):
    make_audio(tmp_path / "clips" / "a.wav")
    make_audio(tmp_path / "clips" / "b.flac")
    make_audio(tmp_path / "clips" / "c.wav")
    (tmp_path / "labels.csv").write_text("path,emotion,speaker\nclips/a.wav,Angry,s1\nclips/b.flac,ps,s2\n"
                                         "clips/c.wav,contempt,s1\n")
    corpus = load_corpus(tmp_path / "labels.csv")
    u = _by_name(corpus)
    assert corpus.layout == "csv" and corpus.name == "labels"
    assert (u["a.wav"].emotion, u["a.wav"].label, u["a.wav"].speaker) == ("angry", "Angry", "s1")
    assert u["b.flac"].emotion == "surprise"
    assert u["c.wav"].emotion == "contempt", "labels outside the vocabulary are kept"


def test_csv_manifest_without_required_column(tmp_path):
    (tmp_path / "bad.csv").write_text("file,label\nx.wav,angry\n")
    with pytest.raises(ValueError, match="missing column"):
        load_corpus(tmp_path / "bad.csv")


def test_corrupt_and_misnamed_files_are_skipped_by_name(tmp_path, make_audio):
    make_audio(tmp_path / "wav" / "03a01Fa.wav")
    make_audio(tmp_path / "wav" / "03a01Wa.wav")
    (tmp_path / "wav" / "08a02Ta.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    (tmp_path / "wav" / "09a01Na.wav").write_bytes(b"")
    make_audio(tmp_path / "wav" / "notes.wav")
    corpus = load_corpus(tmp_path)
    assert len(corpus) == 2
    reasons = {Path(s.path).name: s.reason for s in corpus.skipped}
    assert set(reasons) == {"08a02Ta.wav", "09a01Na.wav", "notes.wav"}
    assert "not decodable" in reasons["08a02Ta.wav"]
    assert "does not follow the emodb layout" in reasons["notes.wav"]
    assert "08a02Ta.wav" in corpus.summary()


def test_unrecognisable_layout_says_what_to_do(tmp_path, make_audio):
    make_audio(tmp_path / "x" / "one.wav")
    make_audio(tmp_path / "y" / "two.wav")
    with pytest.raises(ValueError, match="--layout"):
        load_corpus(tmp_path)


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_corpus(tmp_path / "nope")


def test_manifest_csv_round_trip(tmp_path):
    corpus = load_corpus(BUNDLED)
    path = corpus.write_csv(tmp_path / "manifest.csv")
    assert read_manifest_csv(path) == corpus.utterances


def test_canonical_vocabulary():
    assert canonical_emotion("Pleasant_surprise") == "surprise"
    assert canonical_emotion("fearful") == "fear" and canonical_emotion("HAPPINESS") == "happy"
    assert canonical_emotion("contempt") is None


def test_bundled_emodb():
    corpus = load_corpus(BUNDLED)
    assert (corpus.layout, len(corpus), len(corpus.speakers)) == ("emodb", 535, 10)
    assert corpus.emotions == ["angry", "boredom", "disgust", "fear", "happy", "neutral", "sad"]
    assert not corpus.skipped
    assert corpus.sources == [("emodb", str(BUNDLED))]
    assert corpus.subset(lambda u: u.speaker == "03").sources == corpus.sources


def test_shared_emodb_matches_bundled_copy():
    shared = load_corpus(shared_corpus("emodb"))
    bundled = load_corpus(BUNDLED)
    key = lambda c: sorted((Path(u.path).stem, u.emotion, u.speaker, u.duration) for u in c.utterances)  # noqa: E731
    assert key(shared) == key(bundled)


def test_shared_tess():
    corpus = load_corpus(shared_corpus("tess"))
    assert (corpus.layout, len(corpus), corpus.speakers) == ("tess", 2800, ["OAF", "YAF"])
    assert not corpus.skipped
    assert all(n == 400 for n in __import__("collections").Counter(u.emotion for u in corpus.utterances).values())
