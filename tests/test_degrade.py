"""Waveform degradations (training/degrade.py) on real speech: each one measurably does what it says."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.signal

from tests.conftest import BUNDLED, tone
from training import degrade
from speech_emotion.audio import read_audio
from training.degrade import (
    CONDITIONS,
    DegradeSettings,
    add_babble,
    add_noise,
    gain,
    lossy_codec,
    mic_response,
    pad_silence,
    random_degradation,
    reverberate,
    telephone,
)

SR = 16000


def _load(name: str) -> np.ndarray:
    audio = read_audio(BUNDLED / "wav" / f"{name}.flac")
    assert audio.sample_rate == SR and audio.channels == 1
    return audio.mono()


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    """Speaker 03 (male), 1.9 s."""
    return _load("03a01Fa")


@pytest.fixture(scope="module")
def others() -> list[np.ndarray]:
    """Other speakers' clips for babble: speakers 08, 09 (female), 10 (male), 11 (male)."""
    return [_load(name) for name in ("08a01Fd", "09a01Fa", "10a01Ac", "11a01Ab")]


def db(x: float) -> float:
    return 10 * np.log10(x)


def power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64)))


def band_power(x: np.ndarray, lo: float, hi: float, sr: int = SR) -> float:
    """Power per Hz of ``x`` in [lo, hi) Hz (Welch)."""
    f, p = scipy.signal.welch(x.astype(np.float64), sr, nperseg=1024)
    return float(p[(f >= lo) & (f < hi)].mean())


def assert_fresh_float32(out: np.ndarray, y: np.ndarray, length: int | None = None):
    assert out.dtype == np.float32 and out.ndim == 1
    assert len(out) == (len(y) if length is None else length)
    assert np.all(np.isfinite(out))
    assert not np.shares_memory(out, y)


# ------------------------------------------------------------------------------------------------- padding

def test_pad_silence_adds_exactly_that_much_digital_silence(clip):
    before = clip.copy()
    out = pad_silence(clip, SR, before=0.5, after=0.25)
    assert_fresh_float32(out, clip, len(clip) + 8000 + 4000)
    assert not out[:8000].any() and not out[-4000:].any()
    np.testing.assert_array_equal(out[8000:-4000], clip)
    np.testing.assert_array_equal(clip, before)  # input untouched


def test_pad_silence_noise_floor_has_the_requested_level(clip):
    out = pad_silence(clip, SR, np.random.default_rng(0), before=1.0, after=1.0, noise_dbfs=-60)
    assert len(out) == len(clip) + 2 * SR
    for pad in (out[:SR], out[-SR:]):
        assert abs(db(power(pad)) - -60) < 1.0
    np.testing.assert_array_equal(out[SR:-SR], clip)
    with pytest.raises(ValueError, match="rng"):
        pad_silence(clip, SR, before=1.0, after=1.0, noise_dbfs=-60)


# --------------------------------------------------------------------------------------------------- noise

@pytest.mark.parametrize("color", ["white", "pink", "brown"])
@pytest.mark.parametrize("snr_db", [20.0, 5.0])
def test_add_noise_hits_the_snr(clip, color, snr_db):
    out = add_noise(clip, SR, np.random.default_rng(1), snr_db=snr_db, color=color)
    assert_fresh_float32(out, clip)
    noise = out.astype(np.float64) - clip
    assert abs(db(power(clip) / power(noise)) - snr_db) < 0.5


def test_noise_colours_tilt_towards_low_frequencies(clip):
    tilt = {}  # low band over high band, dB per Hz, of the added noise
    for color in ("white", "pink", "brown"):
        noise = add_noise(clip, SR, np.random.default_rng(2), snr_db=10, color=color).astype(np.float64) - clip
        tilt[color] = db(band_power(noise, 100, 500) / band_power(noise, 4000, 8000))
    # 1/f over the band centres (~300 Hz vs ~6 kHz) is ~13 dB, 1/f^2 twice that
    assert abs(tilt["white"]) < 2
    assert 8 < tilt["pink"] < 18
    assert tilt["brown"] > tilt["pink"] + 8


def test_add_noise_rejects_unknown_colour(clip):
    with pytest.raises(ValueError, match="color"):
        add_noise(clip, SR, np.random.default_rng(0), snr_db=10, color="purple")


# -------------------------------------------------------------------------------------------------- babble

@pytest.mark.parametrize("snr_db", [20.0, 10.0, 0.0])
def test_add_babble_hits_the_snr_and_sounds_like_speech(clip, others, snr_db):
    out = add_babble(clip, SR, np.random.default_rng(3), snr_db=snr_db, others=others, talkers=3)
    assert_fresh_float32(out, clip)
    babble = out.astype(np.float64) - clip
    assert abs(db(power(clip) / power(babble)) - snr_db) < 0.5
    # speech, not white noise: most power below 1 kHz (white noise would be flat, ~0 dB)
    assert db(band_power(babble, 100, 1000) / band_power(babble, 4000, 8000)) > 10


def test_add_babble_is_made_of_the_other_clips(clip, others):
    longer = np.concatenate(others)  # one talker, longer than the clip: a stretch at a random offset
    babble = add_babble(clip, SR, np.random.default_rng(4), snr_db=0, others=[longer], talkers=1) - clip
    longer64, babble64 = longer.astype(np.float64), babble.astype(np.float64)
    corr = scipy.signal.correlate(longer64, babble64, mode="valid", method="fft")
    sliding = np.cumsum(np.concatenate([[0.0], longer64 ** 2]))  # energy of each window of len(babble)
    sliding = sliding[len(babble64):] - sliding[:-len(babble64)]
    assert np.max(corr / np.sqrt(sliding * np.sum(babble64 ** 2) + 1e-30)) > 0.999

    short = others[0][: SR // 2]  # shorter than the clip: looped
    looped = add_babble(clip, SR, np.random.default_rng(4), snr_db=0, others=[short], talkers=1) - clip
    period = looped[: SR // 2]
    np.testing.assert_allclose(looped[SR // 2: SR], period, atol=1e-6)


def test_add_babble_needs_others(clip):
    with pytest.raises(ValueError, match="others"):
        add_babble(clip, SR, np.random.default_rng(0), snr_db=10, others=[])


# -------------------------------------------------------------------------------------------------- reverb

def test_reverb_tail_decays_at_the_rt60():
    click = np.zeros(int(1.2 * SR), np.float32)
    at = SR // 10
    click[at] = 1.0
    out = reverberate(click, SR, np.random.default_rng(5), rt60=0.5, direct_ratio_db=0.0)
    assert_fresh_float32(out, click)
    assert np.abs(out[:at]).max() < 1e-6  # causal (up to FFT round-off)
    window = SR // 10
    tail = out[at + 1:].astype(np.float64)
    energy = np.array([db(np.sum(tail[i * window:(i + 1) * window] ** 2)) for i in range(5)])
    assert np.all(np.diff(energy) < 0), energy
    assert energy[0] - energy[4] >= 20  # within rt60 (0.5 s)
    slope = np.polyfit(np.arange(5) * 0.1, energy, 1)[0]  # -60 dB per rt60: -120 dB/s
    assert -150 < slope < -90, slope
    # direct-to-reverberant energy ratio as asked (0 dB)
    assert abs(db(out[at] ** 2 / np.sum(tail ** 2))) < 0.5


def test_reverb_on_speech_keeps_length_and_level_and_is_seeded(clip):
    a = reverberate(clip, SR, np.random.default_rng(6), rt60=0.5)
    assert_fresh_float32(a, clip)
    assert abs(db(power(a) / power(clip))) < 0.01
    assert np.corrcoef(a, clip)[0, 1] < 0.95  # smeared, not the dry clip
    np.testing.assert_array_equal(a, reverberate(clip, SR, np.random.default_rng(6), rt60=0.5))
    assert not np.allclose(a, reverberate(clip, SR, np.random.default_rng(7), rt60=0.5))


# ----------------------------------------------------------------------------------------------- telephone

def test_telephone_keeps_only_the_phone_band(clip):
    out = telephone(clip, SR)
    assert_fresh_float32(out, clip)
    assert db(band_power(out, 3600, 8000) / band_power(clip, 3600, 8000)) < -30
    assert db(band_power(out, 0, 250) / band_power(clip, 0, 250)) < -20
    assert abs(db(band_power(out, 500, 3000) / band_power(clip, 500, 3000))) < 1
    band = scipy.signal.sosfiltfilt(scipy.signal.butter(4, [300, 3400], "bandpass", fs=SR, output="sos"), clip)
    assert np.corrcoef(out, band)[0, 1] > 0.98


def test_telephone_mu_law_adds_quantisation_noise(clip):
    clean = telephone(clip, SR, mu_law=False)
    coded = telephone(clip, SR)
    noise_db = db(power(coded - clean) / power(clean))
    assert -45 < noise_db < -25  # 8-bit mu-law: ~35-40 dB SNR on speech


def test_telephone_at_another_rate_keeps_length():
    y = tone(1.0, 22050)[:, 0][:22049]  # odd: 8 kHz and back would round it to another length
    out = telephone(y, 22050)
    assert_fresh_float32(out, y)
    band = scipy.signal.sosfiltfilt(scipy.signal.butter(4, [300, 3400], "bandpass", fs=22050, output="sos"), y)
    assert np.corrcoef(out, band)[0, 1] > 0.95  # a 220 Hz voice: its harmonics in the band remain


# --------------------------------------------------------------------------------------------- lossy codec

def test_mp3_64k_is_aligned_and_low_passed(clip):
    out = lossy_codec(clip, SR, codec="mp3", bitrate_kbps=64)
    assert_fresh_float32(out, clip)
    assert not np.allclose(out, clip, atol=1e-4)
    assert np.corrcoef(out, clip)[0, 1] > 0.99
    # LAME low-passes 16 kHz input at ~7.5 kHz
    assert db(band_power(out, 7700, 8000) / band_power(clip, 7700, 8000)) < -30
    assert abs(db(band_power(out, 300, 3000) / band_power(clip, 300, 3000))) < 1


@pytest.mark.parametrize("kbps", [16, 32])
def test_mp3_low_bitrates_without_gapless_info_are_still_aligned(clip, kbps):
    # at these rates LAME's info frame is too small for the delay tag: the decoder returns 1105 samples of
    # encoder delay in front, which lossy_codec must remove
    out = lossy_codec(clip, SR, bitrate_kbps=kbps)
    assert_fresh_float32(out, clip)
    assert np.corrcoef(out, clip)[0, 1] > 0.95


def test_mp3_lower_bitrate_loses_more(clip):
    error = {k: power(lossy_codec(clip, SR, bitrate_kbps=k) - 0.95 * clip) for k in (16, 64, 128)}
    assert error[16] > error[64] > error[128]
    low = lossy_codec(clip, SR, bitrate_kbps=16)
    assert db(band_power(low, 6000, 8000) / band_power(clip, 6000, 8000)) < -30  # cut at ~5 kHz


def test_mp3_at_a_rate_mpeg_cannot_carry():
    y = tone(1.0, 20000)[:, 0][:19999]  # resampled to 22.05 kHz and back: still exactly len(y)
    out = lossy_codec(y, 20000, bitrate_kbps=64)
    assert_fresh_float32(out, y)
    assert np.corrcoef(out, y)[0, 1] > 0.95


def test_ogg_vorbis_round_trip(clip):
    out = lossy_codec(clip, SR, codec="ogg", bitrate_kbps=48)
    assert_fresh_float32(out, clip)
    assert not np.allclose(out, clip, atol=1e-4)
    assert np.corrcoef(out, clip)[0, 1] > 0.95
    with pytest.raises(ValueError, match="codec"):
        lossy_codec(clip, SR, codec="aac")


# ------------------------------------------------------------------------------------------ gain and mic

def test_gain_scales_and_clips(clip):
    quiet = tone(1.0, SR)[:, 0]  # peak ~0.25
    louder = gain(quiet, db=6.0)
    assert_fresh_float32(louder, quiet)
    np.testing.assert_allclose(louder, quiet * 10 ** (6 / 20), rtol=1e-5)
    np.testing.assert_allclose(gain(quiet, db=-6.0), quiet * 10 ** (-6 / 20), rtol=1e-5)
    loud = gain(clip, db=6.0)  # the clip peaks near full scale
    assert loud.max() == 1.0 and loud.min() >= -1.0
    unclipped = np.abs(clip) < 0.4
    np.testing.assert_allclose(loud[unclipped], 2 * clip[unclipped], rtol=0.01)
    assert np.mean(np.abs(loud) == 1.0) > 0.001  # really clipped


def test_mic_response_colours_but_keeps_level(clip):
    bands = [(100, 300), (300, 700), (700, 1500), (1500, 3000), (3000, 6000), (6000, 8000)]
    for seed in range(5):
        out = mic_response(clip, SR, np.random.default_rng(seed))
        assert_fresh_float32(out, clip)
        assert abs(db(power(out) / power(clip))) < 0.001
        change = [db(band_power(out, lo, hi) / band_power(clip, lo, hi)) for lo, hi in bands]
        assert max(change) - min(change) > 1.0, (seed, change)
        np.testing.assert_array_equal(out, mic_response(clip, SR, np.random.default_rng(seed)))
    flat = mic_response(clip, SR, np.random.default_rng(0), max_tilt_db=0, peaks=0)
    np.testing.assert_allclose(flat, clip, atol=1e-5)  # no colouring asked: nothing changes


# -------------------------------------------------------------------------------------- robustness suite

def test_conditions_are_the_fixed_suite():
    assert list(CONDITIONS) == ["silence-1s", "white-20dB", "white-10dB", "babble-20dB", "babble-10dB",
                                "reverb", "telephone", "mp3-64k", "quiet-30dB"]


@pytest.mark.parametrize("name", list(CONDITIONS))
def test_each_condition_changes_the_clip_deterministically(clip, others, name):
    condition = CONDITIONS[name]
    before = clip.copy()
    out = condition(clip, SR, np.random.default_rng(10), others)
    assert out.dtype == np.float32 and out.ndim == 1 and np.all(np.isfinite(out))
    assert out.shape != clip.shape or not np.allclose(out, clip, atol=1e-4)
    np.testing.assert_array_equal(clip, before)
    np.testing.assert_array_equal(out, condition(clip, SR, np.random.default_rng(10), others))
    other_seed = condition(clip, SR, np.random.default_rng(11), others)
    random = name.startswith(("white", "babble", "reverb"))
    assert np.array_equal(out, other_seed) != random


def test_condition_levels(clip, others):
    rng = np.random.default_rng(0)
    assert len(CONDITIONS["silence-1s"](clip, SR, rng, others)) == len(clip) + 2 * SR
    for name, snr in (("white-20dB", 20), ("white-10dB", 10), ("babble-20dB", 20), ("babble-10dB", 10)):
        added = CONDITIONS[name](clip, SR, rng, others).astype(np.float64) - clip
        assert abs(db(power(clip) / power(added)) - snr) < 0.5
    assert db(power(clip) / power(CONDITIONS["quiet-30dB"](clip, SR, rng, others))) == pytest.approx(30, abs=0.01)


# --------------------------------------------------------------------------------- training augmentation

def test_random_degradation_is_seeded_and_varied(clip, others):
    outs = []
    for seed in range(20):
        out = random_degradation(clip, SR, np.random.default_rng(seed), others=others)
        assert out.dtype == np.float32 and out.ndim == 1 and np.all(np.isfinite(out))
        assert np.abs(out).max() <= 1.0
        np.testing.assert_array_equal(out, random_degradation(clip, SR, np.random.default_rng(seed), others=others))
        outs.append(out)
    changed = [o for o in outs if o.shape != clip.shape or not np.array_equal(o, clip)]
    assert len(changed) >= 17  # a few clean passes are by design (~5 %)
    for i, a in enumerate(changed):
        for b in changed[i + 1:]:
            assert a.shape != b.shape or not np.allclose(a, b)


def test_random_degradation_with_every_step_on(clip, others):
    always = DegradeSettings(pad_p=1, reverb_p=1, noise_p=0, babble_p=1, mic_p=1, gain_p=1, gain_db=(10, 10),
                             telephone_p=1, mp3_p=1)
    for seed in range(3):
        out = random_degradation(clip, SR, np.random.default_rng(seed), others=others, settings=always)
        assert len(out) >= len(clip) and np.abs(out).max() <= 1.0 and np.all(np.isfinite(out))
        assert len(out) > len(clip) or np.corrcoef(out, clip)[0, 1] < 0.9
    off = dataclasses.replace(always, pad_p=0, reverb_p=0, babble_p=0, mic_p=0, gain_p=0, telephone_p=0, mp3_p=0)
    np.testing.assert_array_equal(random_degradation(clip, SR, np.random.default_rng(0), settings=off), clip)


def test_random_degradation_noise_is_relative_to_the_speech_not_the_padding(clip):
    only = DegradeSettings(pad_p=1, pad_seconds=(1.5, 1.5), pad_noise_p=0, reverb_p=0, noise_p=1,
                           noise_snr_db=(10, 10), noise_colors=("white",), babble_p=0, mic_p=0, gain_p=0,
                           telephone_p=0, mp3_p=0)
    out = random_degradation(clip, SR, np.random.default_rng(0), settings=only)
    added = out.astype(np.float64) - pad_silence(clip, SR, before=1.5, after=1.5)
    assert abs(db(power(clip) / power(added)) - 10) < 0.5


def test_degrade_settings_are_checked():
    with pytest.raises(ValueError, match="probability"):
        DegradeSettings(noise_p=1.5)
    with pytest.raises(ValueError, match="noise_p \\+ babble_p"):
        DegradeSettings(noise_p=0.7, babble_p=0.5)
    with pytest.raises(ValueError, match="low <= high"):
        DegradeSettings(gain_db=(5.0, -5.0))
    with pytest.raises(ValueError, match="noise_colors"):
        DegradeSettings(noise_colors=("blue",))


def test_every_function_leaves_its_input_alone(clip, others):
    y = clip.copy()
    rng = np.random.default_rng(0)
    for call in (
        lambda: pad_silence(y, SR, rng, before=0.1, after=0.1, noise_dbfs=-60),
        lambda: add_noise(y, SR, rng, snr_db=10, color="pink"),
        lambda: add_babble(y, SR, rng, snr_db=10, others=others),
        lambda: reverberate(y, SR, rng, rt60=0.3),
        lambda: telephone(y, SR),
        lambda: lossy_codec(y, SR),
        lambda: gain(y, db=3),
        lambda: mic_response(y, SR, rng),
        lambda: degrade.random_degradation(y, SR, rng, others=others),
    ):
        out = call()
        assert not np.shares_memory(out, y)
        np.testing.assert_array_equal(y, clip)
