"""Frame features, augmentation, and the frame-sequence model: variable length, masking, export."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from tests.conftest import BUNDLED, ROOT, tone
from speech_emotion.audio import Audio, AudioTooShortError, read_audio
from training.augment import FrameAugment, mask_frequency, mask_time, scale_time, warp_frequency
from speech_emotion.features import (FEATURE_SETS, LogMelFrames, median_voiced, pad_batch, power_spectrogram,
                                     settings_from_dict, yin)
from speech_emotion.model import resolve_model_dir

FRAMES = FEATURE_SETS["logmel"]
RNG = np.random.default_rng


# ------------------------------------------------------------------------------------------ features


@pytest.mark.parametrize("seconds", [0.3, 1.0, 9.0, 30.0])
def test_every_frame_is_kept(seconds):
    x = FRAMES.extract(Audio(tone(seconds, 16000)[:, 0], 16000, 1))
    assert x.shape == (1 + int(seconds * 16000) // FRAMES.hop_length, FRAMES.n_mels * (1 + FRAMES.deltas)
                       + 2 * FRAMES.pitch)
    assert x.dtype == np.float32 and np.isfinite(x).all()


def test_frames_are_normalised_per_utterance_and_ignore_gain():
    audio = read_audio(BUNDLED / "wav" / "03a01Wa.flac")
    x = FRAMES.extract(audio)
    logmel = x[:, : FRAMES.n_mels]
    assert abs(logmel.mean()) < 1e-4 and logmel.std() == pytest.approx(1.0, abs=1e-3)
    quieter = FRAMES.extract(Audio(audio.samples * 0.1, audio.sample_rate, 1))
    np.testing.assert_allclose(quieter, x, atol=2e-3)
    assert not np.all(x == 0, axis=1).any(), "a real frame is never all zeros (zeros mean padding)"


def test_resampled_input_matches(make_audio, tmp_path):
    a = FRAMES.extract(read_audio(make_audio(tmp_path / "a.wav", 2.0, 16000)))
    b = FRAMES.extract(read_audio(make_audio(tmp_path / "b.wav", 2.0, 44100)))
    assert a.shape == b.shape
    # Same tone, different noise samples (the generator draws per sample): close, not identical.
    assert np.corrcoef(a[:, :64].ravel(), b[:, :64].ravel())[0, 1] > 0.95
    assert np.corrcoef(a[:, :24].ravel(), b[:, :24].ravel())[0, 1] > 0.98  # where the harmonics are


def test_too_short():
    with pytest.raises(AudioTooShortError):
        FRAMES.extract(Audio(tone(0.1, 16000)[:, 0], 16000, 1))


def test_settings_travel():
    assert settings_from_dict(FRAMES.to_dict()) == FRAMES
    assert LogMelFrames(pitch=not FRAMES.pitch).fingerprint() != FRAMES.fingerprint()


def test_the_fixed_normalisation_is_recorded_but_not_a_setting():
    """Utterance normalisation is the only one, so not a setting; metadata still records it, so models exported
    before (and their fingerprints: feature caches, speaker profiles) read as they did."""
    data = FRAMES.to_dict()
    assert data["normalize"] == "utterance" and "normalize" not in {f.name for f in dataclasses.fields(LogMelFrames)}
    exported = json.loads((resolve_model_dir(ROOT / "models") / "metadata.json").read_text())["features"]
    assert settings_from_dict(exported).to_dict() == exported
    with pytest.raises(ValueError, match="normalize"):
        settings_from_dict({**data, "normalize": "speaker"})


@pytest.mark.parametrize("f0", [70.0, 110.0, 220.0, 400.0])
def test_yin_finds_the_pitch_of_a_voiced_tone(f0):
    sr = 8000
    t = np.arange(sr) / sr
    y = (np.sin(2 * np.pi * f0 * t) + 0.5 * np.sin(2 * np.pi * 2 * f0 * t) + 0.3 * np.sin(2 * np.pi * 3 * f0 * t))
    est, periodicity = yin(y.astype(np.float32), sr, hop_length=80, frame_length=512)
    assert np.median(est[5:-5]) == pytest.approx(f0, rel=0.01)
    assert periodicity[5:-5].mean() > 0.95


@pytest.mark.parametrize("samples", [100, 159, 160, 161, 4001, "clip"])
@pytest.mark.parametrize("n_fft,hop,win", [(512, 160, 400), (1024, 256, 1024), (400, 100, 301)])
def test_power_spectrogram_is_librosas(samples, n_fft, hop, win):
    import librosa

    if samples == "clip":
        y = FRAMES.waveform(read_audio(BUNDLED / "wav" / "03a01Wa.flac"))
    else:
        y = RNG(samples).standard_normal(samples).astype(np.float32)
    want = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop, win_length=win, center=True)) ** 2
    got = power_spectrogram(y, n_fft=n_fft, hop_length=hop, win_length=win)
    assert got.shape == want.T.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want.T, rtol=1e-3, atol=1e-5 * want.max())


def test_yin_difference_function_is_the_definition():
    """The fast difference function (FFT correlation, running energies) against YIN's definition computed
    directly: each frame's periodicity is 1 minus a value of the directly computed cumulative mean
    normalised difference, and never below that function's minimum (no wrap-around, no lag off by one)."""
    sr, frame_length, hop = 8000, 320, 80
    y = FRAMES.waveform(read_audio(BUNDLED / "wav" / "03a01Wa.flac"))[::2].astype(np.float32)  # ~8 kHz
    f0, periodicity = yin(y, sr, hop_length=hop, frame_length=frame_length, threshold=0.4)
    min_lag, max_lag = sr // 500, int(np.ceil(sr / 60.0))
    window_len = frame_length - max_lag
    padded = np.pad(y.astype(np.float64), frame_length // 2)
    checked = 0
    for i in range(0, len(f0), 7):
        x = padded[i * hop: i * hop + frame_length]
        if len(x) < frame_length or not x.any():
            continue
        d = np.array([np.sum((x[:window_len] - x[tau: tau + window_len]) ** 2) for tau in range(max_lag + 1)])
        cmnd = d[1:] / np.maximum(np.cumsum(d[1:]) / np.arange(1, max_lag + 1), 1e-12)
        search = cmnd[min_lag - 1: max_lag - 1]
        chosen = 1.0 - periodicity[i]
        if periodicity[i] > 0:
            assert np.abs(search - chosen).min() < 2e-3, i
        assert chosen >= min(search.min(), 1.0) - 2e-3, i  # periodicity is clipped to [0, 1]
        checked += 1
    assert checked > 20 and (f0 > 0).mean() > 0.3


def test_yin_calls_digital_silence_unvoiced():
    y = np.concatenate([np.zeros(4000), np.sin(2 * np.pi * 200 * np.arange(4000) / 8000)]).astype(np.float32)
    est, periodicity = yin(y, 8000, hop_length=80, frame_length=320, threshold=0.4)
    assert (est[:45] == 0).all() and (periodicity[:45] == 0).all()
    assert np.median(est[55:-5]) == pytest.approx(200, rel=0.01)


def test_yin_calls_noise_unvoiced():
    noise = np.random.default_rng(0).standard_normal(8000).astype(np.float32)
    est, periodicity = yin(noise, 8000, hop_length=80, frame_length=512, threshold=0.4)
    assert (est > 0).mean() < 0.05 and periodicity.mean() < 0.5


def test_a_strong_second_harmonic_is_not_taken_for_the_fundamental():
    """A 220 Hz voice whose second harmonic is louder than its fundamental (as in many high voices): YIN's
    threshold at 0.4 (the first models') answers an octave too high; at 0.15 it finds 220 Hz, and the frames
    are voiced either way (voicing is decided at 0.4)."""
    sr = 8000
    t = np.arange(sr) / sr
    y = 0.3 * np.sin(2 * np.pi * 220 * t) + np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 660 * t)
    y = (0.5 * y / np.abs(y).max()).astype(np.float32)
    loose, _ = yin(y, sr, hop_length=80, frame_length=320, threshold=0.4)
    strict, _ = yin(y, sr, hop_length=80, frame_length=320, threshold=0.15, voicing=0.4)
    assert np.median(loose[5:-5]) == pytest.approx(440, rel=0.02)
    assert np.median(strict[5:-5]) == pytest.approx(220, rel=0.01) and (strict[5:-5] > 0).all()


def test_the_pitch_column_of_a_voice_whose_harmonics_change_stays_on_its_pitch():
    """The features' pitch column (semitones from the clip's median / 6) for a steady 220 Hz voice whose
    fundamental weakens halfway: with the new preset's settings it stays at 0; with the first models' it
    jumps by an octave (2.0) for half the clip."""
    sr = 16000
    t = np.arange(2 * sr) / sr
    first = np.where(t < 1.0, 1.0, 0.3)
    y = first * np.sin(2 * np.pi * 220 * t) + np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 660 * t)
    y = (0.5 * y / np.abs(y).max()).astype(np.float32)
    new = FEATURE_SETS["logmel-robust-4k-pitch"]
    steady = dataclasses.replace(new, speech=None).frames(y)[10:-10, -2]
    jumpy = dataclasses.replace(new, speech=None, pitch_threshold=0.4, pitch_median=1).frames(y)[10:-10, -2]
    assert np.abs(steady).max() < 0.1
    assert np.abs(np.abs(jumpy).max() - 2.0) < 0.1


def test_the_pitch_median_removes_short_octave_jumps_and_keeps_unvoiced_frames():
    f0 = np.array([0, 200, 201, 402, 199, 0, 0, 198, 396, 200, 202, 0], dtype=float)
    out = median_voiced(f0, 5)
    assert (out[f0 == 0] == 0).all() and (out[f0 > 0] > 190).all() and (out[f0 > 0] < 210).all()
    assert (median_voiced(f0, 1) == f0).all()


def test_the_pitch_settings_of_earlier_models_keep_their_fingerprint():
    """The first models' pitch (threshold 0.4, no median) is what a feature set without the settings gets:
    their metadata, caches and speaker profiles still match; the new preset's settings are written out."""
    old = FEATURE_SETS["logmel-robust-4k"]
    assert "pitch_threshold" not in old.to_dict() and "pitch_median" not in old.to_dict()
    new = FEATURE_SETS["logmel-robust-4k-pitch"]
    assert new.to_dict()["pitch_threshold"] == 0.15 and new.to_dict()["pitch_median"] == 5
    assert settings_from_dict(new.to_dict()) == new and new.fingerprint() != old.fingerprint()
    y = read_audio(BUNDLED / "wav" / "03a01Wa.flac")
    a, b = old.extract(y), new.extract(y)
    assert a.shape == b.shape and np.array_equal(a[:, :-2], b[:, :-2]) and not np.array_equal(a[:, -2], b[:, -2])


# -------------------------------------------------------------------------------------- augmentation


@pytest.fixture(scope="module")
def frames():
    return FRAMES.extract(read_audio(BUNDLED / "wav" / "08a01Fd.flac"))


def test_warp_frequency_moves_energy_along_the_mel_axis(frames):
    """A line at mel bin 20 of every group lands at 20 * alpha, alpha drawn in [0.8, 1.2]: up for some seeds,
    down for others, never outside the range, and the same move in every group."""
    n, groups = FRAMES.n_mels, 3
    line = np.zeros((5, groups * n + 2), dtype=np.float32)  # three mel groups and two pitch columns
    line[:, [g * n + 20 for g in range(groups)]] = 1.0
    centres = []
    for seed in range(12):
        out = warp_frequency(line, RNG(seed), n_mels=n, max_warp=0.2)
        assert out.shape == line.shape
        per_group = [out[0, g * n:(g + 1) * n] for g in range(groups)]
        centre = float(np.sum(np.arange(n) * per_group[0]) / np.sum(per_group[0]))
        assert 20 * 0.8 - 1 <= centre <= 20 * 1.2 + 1
        for block in per_group[1:]:
            np.testing.assert_allclose(block, per_group[0], atol=1e-6)
        centres.append(centre)
    assert min(centres) < 19 and max(centres) > 21, f"the line did not move both ways: {centres}"
    assert warp_frequency(frames, RNG(0), n_mels=n, max_warp=0.0).tolist() == frames.tolist()


def test_warp_leaves_the_pitch_columns_alone():
    x = RNG(0).standard_normal((50, 2 * 64 + 2)).astype(np.float32)
    out = warp_frequency(x, RNG(1), n_mels=64, max_warp=0.1)
    np.testing.assert_array_equal(out[:, 128:], x[:, 128:])
    assert np.isfinite(out).all()


def test_mask_frequency_blanks_the_same_band_in_every_group():
    """One band of 0 to 10 neighbouring mel bins set to 0, the same bins in every group, nothing else changed;
    its width and place vary with the seed."""
    with_deltas = dataclasses.replace(FRAMES, deltas=2)  # three groups: log-mel, delta, delta-delta
    frames = with_deltas.extract(read_audio(BUNDLED / "wav" / "08a01Fd.flac"))
    n = FRAMES.n_mels
    groups = frames.shape[1] // n
    assert groups == 3 and not np.any(np.all(frames[:, :n] == 0, axis=0))
    bands = set()
    for seed in range(12):
        out = mask_frequency(frames, RNG(seed), n_mels=n, masks=1, max_width=10)
        blank = np.where(np.all(out[:, :n] == 0, axis=0))[0]
        assert len(blank) <= 10 and (len(blank) == 0 or np.all(np.diff(blank) == 1)), blank
        columns = np.concatenate([g * n + blank for g in range(groups)])
        assert np.all(out[:, columns] == 0)
        kept = np.setdiff1d(np.arange(frames.shape[1]), columns)
        np.testing.assert_array_equal(out[:, kept], frames[:, kept])
        bands.add(tuple(blank))
    assert len(bands) > 2 and max(len(b) for b in bands) >= 3, f"too few distinct bands masked: {bands}"


def test_mask_time_drops_frames(frames):
    out = mask_time(frames, RNG(5), masks=2, max_fraction=0.1)
    dropped = np.all(out == 0, axis=1).sum()
    assert 0 < dropped <= 2 * int(0.1 * len(frames)) + 1


def test_scale_time_changes_the_length(frames):
    lengths = {len(scale_time(frames, RNG(i), max_scale=0.2)) for i in range(10)}
    assert min(lengths) >= int(0.8 * len(frames)) - 1 and max(lengths) <= int(1.2 * len(frames)) + 1
    assert len(lengths) > 1


def test_frame_augment_is_random_but_seeded(frames):
    aug = FrameAugment.for_features(FRAMES)
    a, b, c = aug(frames, RNG(7)), aug(frames, RNG(7)), aug(frames, RNG(8))
    assert np.array_equal(a, b) and not (a.shape == c.shape and np.array_equal(a, c))
    with pytest.raises(ValueError, match="frame features"):
        FrameAugment.for_features(FEATURE_SETS["notebook"])


# -------------------------------------------------------------------------------------------- model


@pytest.fixture(scope="module")
def crnn():
    from training.models import build_crnn

    dims = FRAMES.extract(Audio(tone(1.0, 16000)[:, 0], 16000, 1)).shape[1]
    return build_crnn((None, dims), 7)


def _clip(seconds: float, seed: int = 0) -> np.ndarray:
    return FRAMES.extract(Audio(tone(seconds, 16000, freq=150 + 40 * seed, seed=seed)[:, 0], 16000, 1))


def test_padding_does_not_change_a_prediction(crnn):
    short, long = _clip(1.0, 1), _clip(9.0, 2)
    alone = np.asarray(crnn(short[None], training=False))[0]
    batched = np.asarray(crnn(pad_batch([short, long]), training=False))
    np.testing.assert_allclose(batched[0], alone, atol=1e-5)
    np.testing.assert_allclose(batched[1], np.asarray(crnn(long[None], training=False))[0], atol=1e-5)


def test_exported_frame_model_takes_any_length(crnn, tmp_path):
    from speech_emotion.model import ExportedModel
    from training.export import export_model

    export_model(crnn, tmp_path, "frames", {"labels": list("abcdefg"), "features": FRAMES.to_dict()})
    exported = ExportedModel.load(tmp_path / "frames")
    one, ten = _clip(1.0, 3), _clip(10.0, 4)
    for x in (one, ten):
        np.testing.assert_allclose(exported.predict(x[None])[0], np.asarray(crnn(x[None], training=False))[0],
                                   atol=1e-5)
    both = exported.predict(pad_batch([one, ten]))
    np.testing.assert_allclose(both[0], exported.predict(one[None])[0], atol=1e-5)
    assert exported.metadata.input["shape"] == [None, None, one.shape[1]]



# ------------------------------------------------------------------------------ crnn_ensemble: two members


@pytest.fixture(scope="module")
def pair():
    from training.models import build_crnn_ensemble

    return build_crnn_ensemble((None, _clip(1.0).shape[1]), 7, members=2)


def _heads(model, training: bool, x):
    """Each member's probabilities and the model's output, from one call."""
    import keras

    heads = [model.get_layer(f"member{i}_probabilities").output for i in (0, 1)] + [model.output]
    return [np.asarray(t) for t in keras.Model(model.input, heads)(x, training=training)]


def test_ensemble_answers_the_mean_of_its_members(pair):
    x = _clip(2.0, 5)[None]
    a, b, out = _heads(pair, False, x)
    assert np.abs(a - b).max() > 1e-3, "two members, two initialisations: different answers"
    np.testing.assert_allclose(out, (a + b) / 2, atol=1e-6)
    np.testing.assert_allclose(np.asarray(pair(x, training=False)), out, atol=1e-6)


def test_members_fitted_apart_join_into_one_model_answering_their_mean():
    """training.models.join_members: one-member models (fitted apart) become the members of one ensemble."""
    import keras

    from training.models import build_crnn_ensemble, join_members

    dims = _clip(1.0).shape[1]
    members = []
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        members.append(build_crnn_ensemble((None, dims), 7, members=1))
    joined = join_members(build_crnn_ensemble((None, dims), 7, members=2), members)
    x = pad_batch([_clip(2.0, 5), _clip(1.0, 6)])
    alone = [np.asarray(m(x, training=False)) for m in members]
    assert np.abs(alone[0] - alone[1]).max() > 1e-3
    np.testing.assert_allclose(np.asarray(joined(x, training=False)), (alone[0] + alone[1]) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="member2_conv0"):  # three members need three networks
        join_members(build_crnn_ensemble((None, dims), 7, members=3), members)


def test_ensemble_trains_each_member_on_its_own_loss(pair):
    from training.models import MemberCrossentropy

    x = _clip(2.0, 6)[None]
    y = np.eye(7, dtype=np.float32)[[2]]
    smooth = y * 0.9 + 0.1 / 7
    # Training mode: the members' unnormalised geometric mean, whose loss is the mean of their own losses
    # (dropout makes training-mode outputs random, so the members come from the same call).
    a, b, out = _heads(pair, True, x)
    np.testing.assert_allclose(out, np.sqrt(a * b), rtol=1e-4)
    each = [-(smooth * np.log(p)).sum() for p in (a, b)]
    np.testing.assert_allclose(float(MemberCrossentropy(label_smoothing=0.1)(y, out)), np.mean(each), rtol=1e-4)
    # With one member the loss is Keras's own cross-entropy.
    import keras

    p = np.asarray(keras.ops.softmax(np.random.default_rng(0).normal(size=(4, 7)).astype(np.float32)))
    yy = np.eye(7, dtype=np.float32)[[0, 3, 6, 2]]
    np.testing.assert_allclose(float(MemberCrossentropy(label_smoothing=0.1)(yy, p)),
                               float(keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(yy, p)), rtol=1e-5)


def test_consistency_loss_adds_the_divergence_between_the_two_views():
    """training.models.ConsistencyLoss: rows ``i`` and ``n + i`` are two views of one item; with equal answers
    the loss is the base loss, with different ones the base plus the weight times their Jensen-Shannon
    divergence, on both rows of the pair, and the same for an ensemble's unnormalised training output."""
    import keras

    from training.models import ConsistencyLoss, MemberCrossentropy

    rng = np.random.default_rng(0)
    a = np.asarray(keras.ops.softmax(rng.normal(size=(3, 7)).astype(np.float32)))
    b = np.asarray(keras.ops.softmax(rng.normal(size=(3, 7)).astype(np.float32)))
    y = np.eye(7, dtype=np.float32)[[0, 3, 6, 0, 3, 6]]
    base = MemberCrossentropy(label_smoothing=0.1)
    loss = ConsistencyLoss(base, 2.0, reduction=None)
    np.testing.assert_allclose(np.asarray(loss(y, np.concatenate([a, a]))), np.asarray(base.call(y, np.concatenate([a, a]))),
                               rtol=1e-5)
    m = (a + b) / 2
    jsd = 0.5 * (a * np.log(a / m)).sum(1) + 0.5 * (b * np.log(b / m)).sum(1)
    assert jsd.min() > 0.01
    both = np.concatenate([a, b])
    np.testing.assert_allclose(np.asarray(loss(y, both)), np.asarray(base.call(y, both)) + 2.0 * np.concatenate([jsd, jsd]),
                               rtol=1e-4)
    # an unnormalised output (the ensemble's geometric mean in training) is read as its normalised answer
    np.testing.assert_allclose(np.asarray(loss(y, both * 0.8)) - np.asarray(base.call(y, both * 0.8)),
                               2.0 * np.concatenate([jsd, jsd]), rtol=1e-4)
    again = ConsistencyLoss.from_config(loss.get_config())
    assert again.weight == 2.0 and isinstance(again.base, MemberCrossentropy) and again.base.label_smoothing == 0.1


def test_ensemble_padding_and_export(pair, tmp_path):
    from speech_emotion.model import ExportedModel
    from training.export import export_model

    short, long = _clip(1.0, 1), _clip(9.0, 2)
    batched = np.asarray(pair(pad_batch([short, long]), training=False))
    np.testing.assert_allclose(batched[0], np.asarray(pair(short[None], training=False))[0], atol=1e-5)
    export_model(pair, tmp_path, "pair", {"labels": list("abcdefg"), "features": FRAMES.to_dict()})
    exported = ExportedModel.load(tmp_path / "pair")
    np.testing.assert_allclose(exported.predict(pad_batch([short, long])), batched, atol=1e-5)


def test_the_envelope_setting_makes_a_low_and_a_high_voice_with_the_same_formants_alike():
    """``lifter``: the same vowel-like envelope over harmonics of 110 Hz and of 220 Hz reads as nearly the
    same log-mel spectrum with it, and as two different ones without (the harmonics' fine structure)."""
    sr = 16000
    t = np.arange(sr) / sr

    def voice(f0: float) -> np.ndarray:
        freqs = np.arange(f0, 3900, f0)
        gains = sum(np.exp(-0.5 * ((freqs - f) / 150) ** 2) for f in (500, 1500, 2500)) + 0.01
        y = sum(g * np.sin(2 * np.pi * f * t) for f, g in zip(freqs, gains))
        return (0.5 * y / np.abs(y).max()).astype(np.float32)

    def mean_spectrum(settings, y):
        return settings.frames(y)[:, :settings.n_mels].mean(axis=0)

    envelope = dataclasses.replace(FEATURE_SETS["logmel-robust-4k-envelope"], speech=None, pitch=False)
    fine = dataclasses.replace(envelope, lifter=0)
    low, high = voice(110.0), voice(220.0)
    apart_fine = np.abs(mean_spectrum(fine, low) - mean_spectrum(fine, high)).mean()
    apart_envelope = np.abs(mean_spectrum(envelope, low) - mean_spectrum(envelope, high)).mean()
    assert apart_envelope < 0.5 * apart_fine, (apart_envelope, apart_fine)
    assert "lifter" not in FEATURE_SETS["logmel-robust-4k"].to_dict()
    assert envelope.to_dict()["lifter"] == 12 and settings_from_dict(envelope.to_dict()) == envelope


@pytest.mark.parametrize("condition", ["reverb", "telephone", "white-10dB"])
def test_pcen_reads_a_degraded_recording_closer_to_the_clean_one_than_the_log(condition):
    """``compression="pcen"``: a real clip reverberated, through a telephone line or in steady noise gives
    frames nearer the clean clip's than the floored log's are (the gain control per band cancels what stays
    put and damps slow decays), and the recording's gain still cancels out."""
    from training.degrade import CONDITIONS

    pcen = dataclasses.replace(FEATURE_SETS["logmel-robust-4k-pcen"], speech=None, pitch=False)
    log = dataclasses.replace(pcen, compression="log")
    audio = read_audio(BUNDLED / "wav" / "03a01Wa.flac")
    y = log.waveform(audio)
    degraded = CONDITIONS[condition](y, 16000, RNG(0), [read_audio(BUNDLED / "wav" / "08a01Fd.flac").samples])
    degraded = degraded[:len(y)]

    def apart(settings):
        a, b = settings.frames(y), settings.frames(degraded)
        return float(np.sqrt(np.mean((a[:len(b)] - b[:len(a)]) ** 2)))

    assert apart(pcen) < 0.8 * apart(log), (apart(pcen), apart(log))
    np.testing.assert_allclose(pcen.frames(0.01 * y), pcen.frames(y), atol=2e-3)
    assert "compression" not in FEATURE_SETS["logmel-robust-4k"].to_dict()
    assert pcen.to_dict()["compression"] == "pcen" and settings_from_dict(pcen.to_dict()) == pcen
    with pytest.raises(ValueError, match="compression"):
        dataclasses.replace(pcen, compression="cube").frames(y)
