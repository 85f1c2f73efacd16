"""Speaker references: the features' finish step, speaker profiles, and the training sampler."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import BUNDLED
from speech_emotion.audio import read_audio
from speech_emotion.features import FEATURE_SETS, LogMelFrames, settings_from_dict
from speech_emotion.profiles import SpeakerProfile
from training.speaker import PROFILE_SIZES, ReferenceSampler, finish_each, with_speaker_profiles

SPK = FEATURE_SETS["logmel-speaker"]
PLAIN = FEATURE_SETS["logmel"]
N = SPK.n_mels


@pytest.fixture(scope="module")
def clips() -> dict[str, list[np.ndarray]]:
    """Base features of three real clips each of two bundled speakers."""
    names = {"03": ["03a01Fa", "03a01Nc", "03a01Wa"], "10": ["10a01Ac", "10a01Nb", "10a01Wa"]}
    return {s: [SPK.base(read_audio(BUNDLED / "wav" / f"{n}.flac")) for n in ns] for s, ns in names.items()}


def test_base_is_the_plain_features_and_finishing_alone_removes_the_clips_own_mean(clips):
    audio = read_audio(BUNDLED / "wav" / "03a01Wa.flac")
    base = SPK.base(audio)
    np.testing.assert_array_equal(base, PLAIN.extract(audio))
    alone = SPK.extract(audio)
    np.testing.assert_allclose(alone[:, :N].mean(axis=0), 0.0, atol=1e-5)  # every bin, over the clip
    np.testing.assert_allclose(alone[:, :N], base[:, :N] - base[:, :N].mean(axis=0), atol=1e-6)
    np.testing.assert_array_equal(alone[:, N:], base[:, N:])  # pitch columns untouched


def test_a_profile_is_the_mean_spectrum_over_all_its_clips_frames(clips):
    profile = SpeakerProfile.from_features(clips["03"], SPK)
    frames = np.concatenate([c[:, :N] for c in clips["03"]])
    np.testing.assert_allclose(profile.mean, frames.mean(axis=0), atol=1e-5)
    assert (profile.frames, profile.clips) == (len(frames), 3)
    finished = SPK.finish(clips["03"][0], profile.mean)
    np.testing.assert_allclose(finished[:, :N], clips["03"][0][:, :N] - profile.mean, atol=1e-6)
    # One clip's profile is that clip's own reference: the same as finishing it alone.
    np.testing.assert_allclose(SPK.finish(clips["03"][0], SpeakerProfile.from_features(clips["03"][:1], SPK).mean),
                               SPK.finish(clips["03"][0]), atol=1e-6)


def test_profiles_of_different_speakers_differ(clips):
    a, b = (SpeakerProfile.from_features(clips[s], SPK).mean for s in ("03", "10"))
    assert np.abs(a - b).max() > 0.2  # a man (03) and a woman (10): different spectral envelopes


def test_profile_round_trip_and_validation(clips):
    profile = SpeakerProfile.from_features(clips["10"], SPK)
    back = SpeakerProfile.from_dict(profile.to_dict(), SPK)
    np.testing.assert_allclose(back.mean, profile.mean, atol=1e-6)
    good = profile.to_dict()
    bad = [
        ([1, 2], "JSON object"),
        ({k: v for k, v in good.items() if k != "mean"}, "lacks mean"),
        ({**good, "mean": good["mean"][:10]}, f"list of {N} numbers"),
        ({**good, "mean": good["mean"][:-1] + ["x"]}, f"list of {N} numbers"),
        ({**good, "mean": good["mean"][:-1] + [True]}, f"list of {N} numbers"),
        ({**good, "mean": good["mean"][:-1] + [float("nan")]}, "finite"),
        ({**good, "frames": 0}, "positive integers"),
        ({**good, "features": "0123456789abcdef"}, "other feature settings"),
    ]
    for data, message in bad:
        with pytest.raises(ValueError, match=message):
            SpeakerProfile.from_dict(data, SPK)
    with pytest.raises(ValueError, match="do not use a speaker reference"):
        SpeakerProfile.from_dict(good, PLAIN)


def test_a_reference_must_fit_the_features(clips):
    with pytest.raises(ValueError, match="one per mel bin"):
        SPK.finish(clips["03"][0], np.zeros(N + 1))
    with pytest.raises(ValueError, match="take no speaker reference"):
        PLAIN.finish(clips["03"][0], np.zeros(N))
    with pytest.raises(ValueError, match="take no speaker reference"):
        FEATURE_SETS["notebook"].finish(np.zeros((40, 1), np.float32), np.zeros(N))


def test_reference_setting_travels_and_old_metadata_reads_as_none():
    assert settings_from_dict(SPK.to_dict()) == SPK and SPK.uses_reference
    old = {k: v for k, v in PLAIN.to_dict().items() if k != "reference"}  # metadata of models before it
    assert settings_from_dict(old) == PLAIN and not PLAIN.uses_reference
    assert SPK.fingerprint() != PLAIN.fingerprint()
    # The base features are the same: one cache entry, and a profile is valid for either.
    assert SPK.base_fingerprint() == PLAIN.base_fingerprint() == PLAIN.fingerprint()
    assert LogMelFrames(reference="speaker", n_mels=40).base_fingerprint() != SPK.base_fingerprint()
    with pytest.raises(ValueError, match="reference must be"):
        LogMelFrames(reference="corpus").frames(np.zeros(16000, np.float32))


def test_sampler_draws_references_from_the_items_own_speaker_only():
    # Synthetic base features whose log-mel is one constant per clip: speaker A's clips 0-9, B's 100-109.
    values = list(range(10)) + list(range(100, 110))
    features = [np.full((20 + i, N + 2), v, np.float32) for i, v in enumerate(values)]
    speakers = ["A"] * 10 + ["B"] * 10
    sampler = ReferenceSampler(features, speakers, SPK)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        i = int(rng.integers(20))
        x = sampler(i, rng)
        reference = features[i][0, 0] - x[0, 0]
        assert (reference < 10) == (speakers[i] == "A"), "a reference from the other speaker"
        np.testing.assert_array_equal(x[:, N:], features[i][:, N:])
        seen.add(round(float(reference), 3))
    assert len(seen) > 20, "references should vary between draws"
    # Sizes: 1 is the clip itself, None all of the speaker's clips (frame-weighted).
    np.testing.assert_allclose(sampler.reference(3, 1, rng), 3.0)
    a_frames = np.array([20 + i for i in range(10)])
    np.testing.assert_allclose(sampler.reference(3, None, rng), (a_frames * np.arange(10)).sum() / a_frames.sum(),
                               rtol=1e-6)
    assert 1 in PROFILE_SIZES and None in PROFILE_SIZES


def test_evaluation_finishes_each_speaker_with_their_own_profile(clips):
    features = clips["03"] + clips["10"]
    speakers = ["03"] * 3 + ["10"] * 3
    out = with_speaker_profiles(features, speakers, SPK)
    for s, part in (("03", out[:3]), ("10", out[3:])):
        pooled = np.concatenate([p[:, :N] for p in part])
        np.testing.assert_allclose(pooled.mean(axis=0), 0.0, atol=1e-5)  # each speaker centred on their profile
    alone = finish_each(features, SPK)
    for x in alone:
        np.testing.assert_allclose(x[:, :N].mean(axis=0), 0.0, atol=1e-5)
    assert finish_each(features, PLAIN)[0] is features[0]
