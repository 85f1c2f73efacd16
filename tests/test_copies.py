"""Degraded copies of training clips (training/copies.py) on real bundled clips: babble never comes from
outside the clips being trained on, copies are reproducible, and the sampler mixes clean items and copies."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import BUNDLED
from speech_emotion.audio import read_audio
from training.copies import CopySampler, DegradedCopies, Waveforms, condition_inputs
from training.degrade import DegradeSettings
from speech_emotion.features import FEATURE_SETS

FEATURES = FEATURE_SETS["logmel-robust"]


class Watched(Waveforms):
    """Waveforms that note which clips were read."""

    def __init__(self, paths):
        super().__init__(paths)
        self.read: set[int] = set()

    def __getitem__(self, i):
        self.read.add(i)
        return super().__getitem__(i)


def clips():
    files = sorted((BUNDLED / "wav").glob("0[38]a01*.flac")) + sorted((BUNDLED / "wav").glob("09a01*.flac"))
    return [str(f) for f in files], [f.name[:2] for f in files]


def test_babble_only_from_the_clips_trained_on():
    paths, speakers = clips()
    train = [i for i, s in enumerate(speakers) if s != "09"]  # speaker 09 is the fold's test speaker
    waves = Watched(paths)
    copies = DegradedCopies(waves, speakers, FEATURES, copies=2, seed=0,
                            settings=DegradeSettings(babble_p=1.0, noise_p=0.0))  # every copy holds babble
    out = copies.for_items(train)
    assert len(out) == len(train) and all(len(c) == 2 for c in out)
    assert waves.read <= set(train), "a test speaker's clip reached training as babble"
    # and every copy differs from its clean clip
    for i, items in zip(train, out):
        clean = FEATURES.base(read_audio(paths[i]))
        assert all(x.shape != clean.shape or not np.allclose(x, clean) for x in items)


def test_copies_are_reproducible_and_seeded():
    paths, speakers = clips()
    idx = list(range(len(paths)))
    a = DegradedCopies(Waveforms(paths), speakers, FEATURES, copies=2, seed=0).for_items(idx)
    b = DegradedCopies(Waveforms(paths), speakers, FEATURES, copies=2, seed=0).for_items(idx)
    c = DegradedCopies(Waveforms(paths), speakers, FEATURES, copies=2, seed=1).for_items(idx)
    assert all(np.array_equal(x, y) for xs, ys in zip(a, b) for x, y in zip(xs, ys))
    assert any(x.shape != z.shape or not np.allclose(x, z) for xs, zs in zip(a, c) for x, z in zip(xs, zs))


def test_each_draw_is_a_set_of_copies_of_its_own():
    """``for_items(idx, draw)``: set 0 is the run's copies; another draw holds other copies of the same clips
    (a member of an ensemble fitted apart with copies of its own), the same ones each time it is asked for."""
    paths, speakers = clips()
    idx = list(range(len(paths)))
    copies = DegradedCopies(Waveforms(paths), speakers, FEATURES, copies=2, seed=0)
    first, again, second = copies.for_items(idx), copies.for_items(idx, 0), copies.for_items(idx, 1)
    fresh = DegradedCopies(Waveforms(paths), speakers, FEATURES, copies=2, seed=0).for_items(idx, 1)
    assert all(np.array_equal(x, y) for xs, ys in zip(first, again) for x, y in zip(xs, ys))
    assert all(np.array_equal(x, y) for xs, ys in zip(second, fresh) for x, y in zip(xs, ys))
    assert all(len(xs) == len(ys) == 2 for xs, ys in zip(first, second))
    assert not any(x.shape == y.shape and np.allclose(x, y)
                   for xs, ys in zip(first, second) for x in xs for y in ys), "a draw repeated another's copy"


def test_sampler_draws_clean_items_and_copies():
    paths, speakers = clips()
    idx = list(range(len(paths)))
    bases = [FEATURES.base(read_audio(p)) for p in paths]
    copies = DegradedCopies(Waveforms(paths), speakers, FEATURES, copies=2, seed=0).for_items(idx)
    sampler = CopySampler(bases, copies, FEATURES, clean=0.5)
    rng = np.random.default_rng(0)
    clean = FEATURES.finish(bases[0])
    drawn = [sampler(0, rng) for _ in range(40)]
    n_clean = sum(x.shape == clean.shape and np.array_equal(x, clean) for x in drawn)
    assert 8 <= n_clean <= 32, n_clean  # about half
    assert CopySampler(bases, copies, FEATURES, clean=1.0)(0, rng).shape == clean.shape
    # pair: the clip itself, then one of its copies (whatever ``clean`` says); a clip without copies twice
    finished = [FEATURES.finish(c) for c in copies[0]]
    for _ in range(5):
        first, second = sampler.pair(0, rng)
        assert np.array_equal(first, clean)
        assert any(second.shape == c.shape and np.array_equal(second, c) for c in finished)
    bare = CopySampler(bases, [[] for _ in copies], FEATURES, clean=0.0)
    assert all(np.array_equal(x, clean) for x in bare.pair(0, rng))


def test_the_suite_hears_every_condition_and_is_deterministic():
    paths, speakers = clips()
    waves = Waveforms(paths)
    for condition in ("silence-1s", "babble-10dB", "telephone"):
        first = condition_inputs([0, 1], condition, waves, speakers, FEATURES)
        again = condition_inputs([0, 1], condition, waves, speakers, FEATURES)
        assert all(x is not None and np.array_equal(x, y) for x, y in zip(first, again))


def test_settings_from_the_config_reach_the_copies():
    # degrade_args (TrainConfig, --degrade-arg) -> DegradeSettings -> the copies: with every step but the
    # telephone band switched off, every copy is band-limited to the telephone's 300-3400 Hz.
    paths, speakers = clips()
    settings = DegradeSettings.from_dict({"telephone_p": 1.0, "pad_p": 0, "reverb_p": 0, "noise_p": 0,
                                          "babble_p": 0, "mic_p": 0, "gain_p": 0, "mp3_p": 0,
                                          "noise_snr_db": [10, 20]})
    assert settings.noise_snr_db == (10, 20)  # JSON lists become ranges
    logmel = FEATURE_SETS["logmel"]  # no floor under the peak: the emptied bands stay visible
    plain = DegradedCopies(Waveforms(paths), speakers, logmel, copies=1, seed=0).for_items([0])[0][0]
    phone = DegradedCopies(Waveforms(paths), speakers, logmel, copies=1, seed=0, settings=settings).for_items([0])[0][0]
    n_mels = logmel.to_dict()["n_mels"]
    top = slice(n_mels - 8, n_mels)  # the highest mel bands, far above 3.4 kHz
    # features are standardised per clip: bands the telephone emptied sit flat on the floor
    assert phone[:, top].std() < 0.1 * plain[:, top].std(), (phone[:, top].std(), plain[:, top].std())
    with pytest.raises(ValueError, match="unknown degrade setting"):
        DegradeSettings.from_dict({"telephone": 1.0})
    with pytest.raises(ValueError, match="probability"):
        DegradeSettings.from_dict({"telephone_p": 2})


def test_degrade_keeps_the_corpus_layout_and_labels(tmp_path):
    """`python -m training degrade` on a corpus labelled by its folders, with the same file name in each of them
    (one a symbolic link) and one name in two formats: every copy is written, and the degraded corpus loads
    with its labels, as a folder and by its manifest."""
    import shutil

    import soundfile as sf

    from training.cli import main
    from training.corpora import load_corpus

    corpus = tmp_path / "corpus"
    for emotion, clip in (("angry", "03a01Wa"), ("sad", "03a02Ta"), ("neutral", "03a01Nc")):
        (corpus / emotion).mkdir(parents=True)
        shutil.copy(BUNDLED / "wav" / f"{clip}.flac", corpus / emotion / "take1.flac")
    # and one clip as a link to a file elsewhere: its place in the corpus counts, not its target's
    (corpus / "happy").mkdir()
    (corpus / "happy" / "take1.flac").symlink_to((BUNDLED / "wav" / "03a04Fd.flac").resolve())
    # and two recordings of one name in one folder, in two formats: two copies
    shutil.copy(BUNDLED / "wav" / "03a01Fa.flac", corpus / "happy" / "take2.flac")
    sf.write(corpus / "happy" / "take2.wav", read_audio(str(BUNDLED / "wav" / "03a04Fd.flac")).samples, 16000)
    out = tmp_path / "out"
    assert main(["degrade", "--data", str(corpus), "--out", str(out), "--conditions", "quiet-30dB"]) == 0

    written = sorted(p.relative_to(out / "quiet-30dB").as_posix() for p in out.rglob("*.wav"))
    assert written == ["angry/take1.wav", "happy/take1.wav", "happy/take2.flac.wav", "happy/take2.wav.wav",
                       "neutral/take1.wav", "sad/take1.wav"]
    angry, _ = sf.read(out / "quiet-30dB" / "angry" / "take1.wav")
    original = read_audio(str(corpus / "angry" / "take1.flac")).samples
    assert np.abs(angry).max() < 0.1 * np.abs(original).max()  # 30 dB down, not a copy
    for data in (out / "quiet-30dB", out / "quiet-30dB" / "manifest.csv"):
        loaded = load_corpus(str(data))
        assert sorted((u.emotion, u.path.split("/")[-2]) for u in loaded.utterances) == [
            ("angry", "angry"), *[("happy", "happy")] * 3, ("neutral", "neutral"), ("sad", "sad")], data
