"""Decoding and features: the notebook's numbers exactly, any format/rate/width, determinism, the cache."""

from __future__ import annotations

import shutil

import librosa
import numpy as np
import pytest

from speech_emotion.audio import AudioDecodeError, AudioTooShortError, read_audio
from training.extraction import FeatureCache, extract_features, extract_one
from speech_emotion.features import FEATURE_SETS, MeanMFCC, _hann, mel_filterbank, settings_from_dict

SEED = FEATURE_SETS["notebook"]


def notebook_features(path) -> np.ndarray:
    """The notebook's own code, verbatim."""
    y, sr = librosa.load(path, duration=3, offset=0.5)
    return np.mean(librosa.feature.mfcc(y=y, sr=sr, n_mfcc=40).T, axis=0)


def test_seed_features_equal_the_notebooks_on_real_audio(bundled_files):
    for path in bundled_files[::60]:
        ours = extract_one(str(path), SEED)
        assert ours.shape == (40, 1) and ours.dtype == np.float32
        np.testing.assert_array_equal(ours[:, 0], notebook_features(path))


@pytest.mark.parametrize("sr", [8000, 11025, 44100, 96000])
def test_odd_sample_rates_are_resampled_like_librosa(tmp_path, make_audio, sr):
    path = make_audio(tmp_path / "x.flac", seconds=2.0, sr=sr)
    np.testing.assert_array_equal(extract_one(str(path), SEED)[:, 0], notebook_features(path))


@pytest.mark.parametrize("orig, target", [(44100, 16000), (48000, 16000), (8000, 16000), (16000, 8000),
                                           (24414, 16000), (22050, 16000), (11025, 22050)])
def test_resample_is_librosas_sample_for_sample(orig, target):
    """speech_emotion.audio.resample calls soxr itself; it must give what librosa.resample gives (the
    training data's features were made with it), lengths included, for odd lengths and 2-D input too."""
    librosa = pytest.importorskip("librosa")
    from speech_emotion.audio import resample

    rng = np.random.default_rng(orig + target)
    for n in (1, 7, 999, 44101, 48000):
        y = (0.3 * rng.standard_normal(n)).astype(np.float32)
        expected = librosa.resample(y, orig_sr=orig, target_sr=target, res_type="soxr_hq")
        got = resample(y, orig, target)
        assert got.dtype == expected.dtype and got.shape == expected.shape, n
        np.testing.assert_array_equal(got, expected)
    two = (0.3 * rng.standard_normal((2, 3001))).astype(np.float32)
    np.testing.assert_array_equal(resample(two, orig, target),
                                  librosa.resample(two, orig_sr=orig, target_sr=target, res_type="soxr_hq"))


@pytest.mark.parametrize("sr, n_fft, n_mels, fmin, fmax", [
    *sorted({(f.sample_rate, f.n_fft, f.n_mels, f.fmin, f.fmax) for f in FEATURE_SETS.values() if hasattr(f, "n_mels")}),
    (22050, 2048, 128, 0.0, None),  # the notebook's MFCCs
    (8000, 256, 40, 300.0, 3400.0),
])
def test_mel_filterbank_is_librosas_bit_for_bit(sr, n_fft, n_mels, fmin, fmax):
    """Our mel filterbank (numpy only, so workers start without librosa.filters' imports) must be librosa's."""
    ours = mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
    assert ours.dtype == np.float32 and ours.shape == (n_mels, 1 + n_fft // 2)
    np.testing.assert_array_equal(ours, librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax))
    # built once per setting: every clip's features (the service's request path) reuse it, read-only
    assert mel_filterbank(sr, n_fft, n_mels, fmin, fmax) is ours and not ours.flags.writeable


@pytest.mark.parametrize("n", [320, 400, 401, 512, 2048])
def test_hann_window_is_scipys_bit_for_bit(n):
    import scipy.signal

    np.testing.assert_array_equal(_hann(n), scipy.signal.get_window("hann", n, fftbins=True).astype(np.float32))


def test_aiff_behind_a_wav_name(tmp_path, make_audio):
    path = make_audio(tmp_path / "YAF_germ_angry.wav", seconds=2.0, sr=24414, format="AIFF")
    audio = read_audio(path)
    assert audio.format == "AIFF" and audio.sample_rate == 24414
    np.testing.assert_array_equal(extract_one(str(path), SEED)[:, 0], notebook_features(path))


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_wav_sample_widths_and_stereo(tmp_path, make_audio, subtype):
    path = make_audio(tmp_path / "x.wav", seconds=1.5, sr=22050, channels=2, subtype=subtype)
    audio = read_audio(path)
    assert (audio.channels, audio.samples.shape, audio.samples.dtype) == (2, (33075, 2), np.float32)
    # Same numbers as the notebook's librosa.load, which averages channels too.
    np.testing.assert_allclose(extract_one(str(path), SEED)[:, 0], notebook_features(path), rtol=1e-5, atol=1e-3)


def test_bytes_and_paths_decode_identically(bundled_files):
    path = bundled_files[0]
    a, b = read_audio(path), read_audio(path.read_bytes())
    np.testing.assert_array_equal(a.samples, b.samples)


@pytest.mark.parametrize("data", [b"", b"hello, I am not audio", b"RIFF\x24\x00\x00\x00WAVEfmt "])
def test_undecodable_input_raises_a_clear_error(tmp_path, data):
    path = tmp_path / "broken.wav"
    path.write_bytes(data)
    with pytest.raises(AudioDecodeError, match="broken.wav"):
        read_audio(path)
    with pytest.raises(AudioDecodeError):
        read_audio(data)


def test_too_short_for_the_window(tmp_path, make_audio):
    path = make_audio(tmp_path / "short.wav", seconds=0.55)
    with pytest.raises(AudioTooShortError, match="too short"):
        extract_one(str(path), SEED)
    make_audio(tmp_path / "ok.wav", seconds=0.65)
    assert extract_one(str(tmp_path / "ok.wav"), SEED).shape == (40, 1)


def test_extraction_is_deterministic(bundled_files):
    path = str(bundled_files[7])
    np.testing.assert_array_equal(extract_one(path, SEED), extract_one(path, SEED))


def test_settings_round_trip_and_fingerprint():
    assert settings_from_dict(SEED.to_dict()) == SEED
    assert MeanMFCC(n_mfcc=20).fingerprint() != SEED.fingerprint()
    assert MeanMFCC().fingerprint() == SEED.fingerprint()
    with pytest.raises(ValueError, match="unknown feature kind"):
        settings_from_dict({"kind": "nope"})


def test_cache_hits_on_second_run_and_survives_renames(tmp_path, bundled_files):
    files = [str(p) for p in bundled_files[:20]]
    cache = FeatureCache(tmp_path / "cache")
    first = extract_features(files, SEED, cache=cache, jobs=2, progress=False)
    assert (first.computed, first.cached, first.failed) == (20, 0, [])
    second = extract_features(files, SEED, cache=cache, jobs=2, progress=False)
    assert (second.computed, second.cached) == (0, 20)
    for a, b in zip(first.features, second.features):
        np.testing.assert_array_equal(a, b)
    # The key is the content, not the name: a renamed copy is a cache hit.
    renamed = shutil.copy(files[0], tmp_path / "renamed.flac")
    assert extract_features([str(renamed)], SEED, cache=cache, progress=False).cached == 1
    # Different settings are a different key.
    other = extract_features(files[:2], MeanMFCC(n_mfcc=13), cache=cache, progress=False)
    assert (other.computed, other.features[0].shape) == (2, (13, 1))


def test_extraction_on_a_local_ray_instance_fills_the_same_cache_with_the_same_features(tmp_path, bundled_files):
    """`train --ray-address`: the files' features computed as Ray tasks equal those of the local worker
    processes (both one BLAS thread each: bit for bit), a corrupt file is reported by name as here, and the
    entries land in this process's cache (a second run reads them)."""
    pytest.importorskip("ray")
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF garbage")
    files = [str(p) for p in bundled_files[:40]] + [str(bad)]  # more than one chunk of 32
    settings = FEATURE_SETS["logmel-robust-clip"]
    here = extract_features(files, settings, jobs=2, progress=False)
    cache = FeatureCache(tmp_path / "cache")
    there = extract_features(files, settings, cache=cache, progress=False, ray_address="local")
    assert (there.computed, there.cached) == (40, 0)
    assert [s.path for s in there.failed] == [s.path for s in here.failed] == [str(bad)]
    for a, b in zip(here.features, there.features):
        assert (a is None and b is None) or np.array_equal(a, b)
    again = extract_features(files, settings, cache=cache, progress=False)
    assert (again.computed, again.cached) == (0, 40)


def test_failed_files_are_reported_and_the_rest_extracted(tmp_path, bundled_files):
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF garbage")
    files = [str(bundled_files[0]), str(bad), str(bundled_files[1])]
    result = extract_features(files, SEED, cache=FeatureCache(tmp_path / "c"), progress=False)
    assert result.features[1] is None and result.features[0] is not None and result.features[2] is not None
    assert [s.path for s in result.failed] == [str(bad)] and "not decodable" in result.failed[0].reason


def test_unwritable_cache_degrades_to_no_cache(tmp_path, bundled_files):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    result = extract_features([str(bundled_files[0])], SEED, cache=FeatureCache(blocker), progress=False)
    assert result.computed == 1 and result.features[0].shape == (40, 1)
