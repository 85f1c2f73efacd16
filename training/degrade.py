"""Waveform degradations that imitate real recording conditions.

Plain, deterministic functions of mono float32 samples: each takes ``y`` (1-D, values about in [-1, 1]) at
sample rate ``sr`` and returns a new float32 1-D array at the same ``sr``; the input is never modified.
Every random choice comes from an explicit ``rng`` (:class:`numpy.random.Generator`), so a seed fixes the
result.

Two users, one set of functions, so that what a model is trained to withstand and what it is scored
against are the same operations:

- the robustness suite scores test clips under the fixed conditions of :data:`CONDITIONS` (each clip's
  rng seeded by the caller);
- training-time augmentation draws a random chain of the same functions per item,
  :func:`random_degradation`, with its probabilities and ranges in :class:`DegradeSettings`.

The degradations:

- :func:`pad_silence`: silence (digital, or a low noise floor) before and after the clip.
- :func:`add_noise`: white, pink or brown noise at a signal-to-noise ratio.
- :func:`add_babble`: other talkers' speech summed into babble, at a signal-to-noise ratio.
- :func:`reverberate`: a room, as a synthetic exponentially decaying impulse response.
- :func:`telephone`: the 300-3400 Hz phone band at 8 kHz with 8-bit mu-law (G.711-like).
- :func:`lossy_codec`: an MP3 (or Ogg Vorbis) encode and decode round trip with libsndfile.
- :func:`gain`: louder or quieter, clipped at full scale.
- :func:`mic_response`: a random microphone/channel colouring (tilt and peaks).

Example::

    >>> import numpy as np
    >>> from speech_emotion.audio import read_audio
    >>> from training.degrade import CONDITIONS
    >>> y = read_audio("data/emodb/wav/03a01Fa.flac").mono()
    >>> noisy = CONDITIONS["white-10dB"](y, 16000, np.random.default_rng(0), ())
    >>> noisy.shape == y.shape, noisy.dtype
    (True, dtype('float32'))
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np
import scipy.fft
import scipy.signal
import soundfile as sf

from speech_emotion.audio import resample

#: A fixed robustness condition: ``(y, sr, rng, others) -> degraded y``.
Condition = Callable[[np.ndarray, int, np.random.Generator, Sequence[np.ndarray]], np.ndarray]

NOISE_COLORS = ("white", "pink", "brown")
CODECS = ("mp3", "ogg")


def _mono(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"expected mono samples of shape (frames,), got shape {y.shape}")
    return y


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    """``y`` as float32, cut or zero-padded to ``n`` samples (a resampling round trip can be a sample off)."""
    y = np.asarray(y, dtype=np.float32)[:n]
    return np.concatenate([y, np.zeros(n - len(y), np.float32)]) if len(y) < n else y


def _power(y: np.ndarray) -> float:
    return float(np.mean(np.square(y, dtype=np.float64))) if len(y) else 0.0


def _db_to_power(db: float) -> float:
    return 10.0 ** (db / 10.0)


# --------------------------------------------------------------------------------------------------- padding

def pad_silence(y: np.ndarray, sr: int, rng: np.random.Generator | None = None, *, before: float, after: float,
                noise_dbfs: float | None = None) -> np.ndarray:
    """``before`` and ``after`` seconds of silence around the clip.

    Digital silence (zeros) when ``noise_dbfs`` is None, else white noise whose RMS is ``noise_dbfs``
    decibels relative to full scale (an RMS of 1.0), e.g. -60, as a real recorder's noise floor; that
    needs ``rng``. The clip itself is unchanged in the middle.
    """
    y = _mono(y)
    if before < 0 or after < 0:
        raise ValueError(f"padding must be >= 0 s, got before={before}, after={after}")
    n_before, n_after = int(round(before * sr)), int(round(after * sr))
    if noise_dbfs is None:
        head = np.zeros(n_before, np.float32)
        tail = np.zeros(n_after, np.float32)
    else:
        if rng is None:
            raise ValueError("pad_silence with noise_dbfs needs an rng")
        rms = 10.0 ** (noise_dbfs / 20.0)
        head = (rms * rng.standard_normal(n_before)).astype(np.float32)
        tail = (rms * rng.standard_normal(n_after)).astype(np.float32)
    return np.concatenate([head, y, tail])


# ---------------------------------------------------------------------------------------------------- noise

# Below this the 1/f and 1/f^2 spectra would put much of pink and (most of) brown noise's power into
# inaudible rumble that the SNR would still count; microphones and ADCs high-pass there anyway.
_NOISE_LOW_HZ = 20.0


def colored_noise(n: int, sr: int, rng: np.random.Generator, color: str = "white") -> np.ndarray:
    """``n`` samples of unit-power noise: white, pink (power ~ 1/f) or brown (power ~ 1/f^2).

    Coloured noise is white Gaussian noise whose spectrum is shaped with an FFT (amplitude ~ f^-1/2 or
    f^-1), with nothing below 20 Hz; float64.
    """
    if color not in NOISE_COLORS:
        raise ValueError(f"noise color must be one of {NOISE_COLORS}, got {color!r}")
    white = rng.standard_normal(n)
    if color == "white" or n < 2:
        noise = white
    else:
        spectrum = scipy.fft.rfft(white)
        f = scipy.fft.rfftfreq(n, 1.0 / sr)
        exponent = 0.5 if color == "pink" else 1.0
        shape = np.zeros_like(f)
        audible = f >= _NOISE_LOW_HZ
        shape[audible] = (f[audible] / _NOISE_LOW_HZ) ** -exponent
        noise = scipy.fft.irfft(spectrum * shape, n)
    power = _power(noise)
    return noise / math.sqrt(power) if power > 0 else noise


def _add_at_snr(y: np.ndarray, noise: np.ndarray, snr_db: float, signal_power: float | None = None) -> np.ndarray:
    """``y + noise`` with the noise scaled so that signal power / noise power is ``snr_db``."""
    signal_power = _power(y) if signal_power is None else signal_power
    noise_power = _power(noise)
    if signal_power == 0 or noise_power == 0:
        return y.copy()  # no signal to measure the ratio against (or nothing to add)
    scale = math.sqrt(signal_power / _db_to_power(snr_db) / noise_power)
    return (y + scale * noise).astype(np.float32)


def add_noise(y: np.ndarray, sr: int, rng: np.random.Generator, *, snr_db: float, color: str = "white",
              signal_power: float | None = None) -> np.ndarray:
    """Additive ``color`` noise (white, pink or brown) at ``snr_db`` relative to the clip's mean power.

    The noise is normalised to exactly the power the SNR asks for. ``signal_power`` overrides the
    reference power (a caller that padded the clip with silence passes the unpadded clip's). A clip of
    digital silence has no power to measure against and comes back unchanged.
    """
    y = _mono(y)
    return _add_at_snr(y, colored_noise(len(y), sr, rng, color), snr_db, signal_power)


def add_babble(y: np.ndarray, sr: int, rng: np.random.Generator, *, snr_db: float, others: Sequence[np.ndarray],
               talkers: int = 3, signal_power: float | None = None) -> np.ndarray:
    """Babble of ``talkers`` other voices, added at ``snr_db`` relative to the clip's mean power.

    Each talker is a clip drawn from ``others`` (other speakers' mono clips at the same ``sr``; without
    replacement when there are enough): a longer clip contributes a stretch starting at a random offset, a
    shorter one is looped from a random offset. Talkers are normalised to equal power before they are
    summed. ``signal_power`` overrides the reference power, as for :func:`add_noise`.

    Raises ValueError when ``others`` is empty or all the chosen clips are silent.
    """
    y = _mono(y)
    if len(others) == 0:
        raise ValueError("add_babble needs other speakers' clips (others is empty)")
    if talkers < 1:
        raise ValueError(f"talkers must be >= 1, got {talkers}")
    n = len(y)
    if n == 0:
        return y.copy()
    chosen = rng.choice(len(others), size=talkers, replace=len(others) < talkers)
    babble = np.zeros(n, np.float64)
    for i in chosen:
        clip = _mono(others[int(i)])
        if len(clip) == 0:
            continue
        if len(clip) >= n:
            start = int(rng.integers(0, len(clip) - n + 1))
            part = clip[start:start + n]
        else:
            start = int(rng.integers(0, len(clip)))
            part = np.tile(clip, n // len(clip) + 2)[start:start + n]
        power = _power(part)
        if power > 0:
            babble += part / math.sqrt(power)
    if _power(babble) == 0:
        raise ValueError("add_babble: the chosen clips in others are silent")
    return _add_at_snr(y, babble, snr_db, signal_power)


# --------------------------------------------------------------------------------------------------- reverb

def room_impulse_response(sr: int, rng: np.random.Generator, *, rt60: float, direct_ratio_db: float = 0.0
                          ) -> np.ndarray:
    """Synthetic room impulse response: a unit direct-path impulse, then Gaussian noise under an exponential
    envelope whose energy falls 60 dB in ``rt60`` seconds (Polack's statistical model of late
    reverberation, the usual synthetic RIR in augmentation). The tail's total energy is set so that direct
    energy / reverberant energy is ``direct_ratio_db``. Length ``rt60`` seconds (the tail is then 60 dB
    down); float64.
    """
    if rt60 <= 0:
        raise ValueError(f"rt60 must be > 0 s, got {rt60}")
    n = max(2, int(round(rt60 * sr)))
    t = np.arange(1, n) / sr
    # amplitude 10^(-3 t / rt60): energy 10^(-6 t / rt60), i.e. -60 dB at t = rt60
    tail = rng.standard_normal(n - 1) * 10.0 ** (-3.0 * t / rt60)
    tail *= math.sqrt(1.0 / _db_to_power(direct_ratio_db) / _power(tail) / len(tail))
    return np.concatenate([[1.0], tail])


def reverberate(y: np.ndarray, sr: int, rng: np.random.Generator, *, rt60: float, direct_ratio_db: float = 0.0
                ) -> np.ndarray:
    """The clip played in a room: convolved with :func:`room_impulse_response`.

    The impulse response is the standard synthetic one: a direct-path impulse plus exponentially decaying
    Gaussian noise whose energy falls 60 dB in ``rt60`` seconds, ``direct_ratio_db`` the
    direct-to-reverberant energy ratio. The output keeps the input's length (the reverberant tail after
    the last sample is cut, as a recording that stops there would) and its RMS.
    """
    y = _mono(y)
    ir = room_impulse_response(sr, rng, rt60=rt60, direct_ratio_db=direct_ratio_db)
    if len(y) == 0:
        return y.copy()
    wet = scipy.signal.oaconvolve(y.astype(np.float64), ir)[:len(y)]
    wet_power, dry_power = _power(wet), _power(y)
    if wet_power > 0:
        wet *= math.sqrt(dry_power / wet_power)
    return wet.astype(np.float32)


# ------------------------------------------------------------------------------------------------ telephone

TELEPHONE_SR = 8000
TELEPHONE_BAND = (300.0, 3400.0)
MU = 255


@functools.lru_cache(maxsize=16)
def _band_pass(sr: int) -> np.ndarray:
    low, high = TELEPHONE_BAND
    high = min(high, 0.45 * sr)
    return scipy.signal.butter(4, [low, high], btype="bandpass", fs=sr, output="sos")


def _zero_phase(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    # sosfiltfilt's default edge padding needs a few dozen samples; a shorter clip gets what it has
    padlen = min(3 * (2 * len(sos) + 1), max(len(x) - 1, 0))
    return scipy.signal.sosfiltfilt(sos, x, padlen=padlen).astype(np.float32)


def mu_law_round_trip(y: np.ndarray, mu: int = MU) -> np.ndarray:
    """8-bit mu-law round trip: compand, keep a sign bit and 7 bits of magnitude (as G.711 codes
    a sample), expand. Values beyond full scale clip first, as they would in the codec."""
    x = np.clip(y.astype(np.float64), -1.0, 1.0)
    companded = np.log1p(mu * np.abs(x)) / math.log1p(mu)
    levels = np.round(companded * 127) / 127
    return (np.sign(x) * np.expm1(levels * math.log1p(mu)) / mu).astype(np.float32)


def telephone(y: np.ndarray, sr: int, *, mu_law: bool = True) -> np.ndarray:
    """The clip as heard over a narrowband phone line (G.711-like), back at ``sr``.

    Band-pass 300-3400 Hz (4th-order Butterworth, zero phase), resample to 8 kHz, 8-bit mu-law
    (mu = 255) round trip when ``mu_law``, band-pass again (a phone channel filters on the receiving side
    too, which also keeps the quantisation noise inside the band), resample back to ``sr``.
    """
    y = _mono(y)
    if len(y) == 0:
        return y.copy()
    x = _zero_phase(_band_pass(sr), y)
    x = resample(x, sr, TELEPHONE_SR)
    if mu_law:
        x = mu_law_round_trip(x)
    x = _zero_phase(_band_pass(TELEPHONE_SR), x)
    return _fit(resample(x, TELEPHONE_SR, sr), len(y))


# ----------------------------------------------------------------------------------------------- lossy codec

#: Sample rates an MPEG-1/2/2.5 Layer III stream can carry; other rates are resampled to the next one up.
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)

# Vorbis in libsndfile has no constant-bitrate mode: its compression level is a quality setting. This table
# is the bitrate each level gave on EMO-DB speech at 16 kHz mono (headers excluded); a requested bitrate
# picks the level by interpolation. At other rates or on other material the real bitrate differs.
_VORBIS_LEVELS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
_VORBIS_KBPS_16K = (82.0, 76.0, 69.0, 63.0, 56.0, 51.0, 46.0, 41.0, 36.0, 31.0, 27.0)


def _mp3_rate(sr: int) -> int:
    return next((rate for rate in MP3_RATES if rate >= sr), MP3_RATES[-1])


def _mp3_level(sr: int, bitrate_kbps: float) -> float:
    """libsndfile's compression level for a constant ``bitrate_kbps``.

    libsndfile (mpeg_l3_encode.c) turns the level c into a CBR bitrate linearly, truncated to an integer,
    and LAME then takes the nearest legal MPEG bitrate: 320 - c * 288 kb/s at 32-48 kHz (MPEG-1),
    160 - c * 152 at 16-24 kHz (MPEG-2), 64 - c * 56 below (MPEG-2.5). Aiming half a kb/s above the
    request keeps the truncation from landing one below it.
    """
    high, low = (320.0, 32.0) if sr >= 32000 else (160.0, 8.0) if sr >= 16000 else (64.0, 8.0)
    target = min(max(float(bitrate_kbps), low), high)
    return min(max((high - target - 0.5) / (high - low), 0.0), 1.0)


def _encode_decode(y: np.ndarray, sr: int, codec: str, bitrate_kbps: float) -> np.ndarray:
    buffer = io.BytesIO()
    if codec == "mp3":
        options = dict(format="MP3", subtype="MPEG_LAYER_III", compression_level=_mp3_level(sr, bitrate_kbps),
                       bitrate_mode="CONSTANT")
    else:
        level = float(np.interp(-bitrate_kbps, [-k for k in _VORBIS_KBPS_16K], _VORBIS_LEVELS))
        options = dict(format="OGG", subtype="VORBIS", compression_level=level)
    with sf.SoundFile(buffer, "w", sr, 1, **options) as f:
        f.write(y)
    buffer.seek(0)
    decoded, _ = sf.read(buffer, dtype="float32", always_2d=False)
    return decoded


@functools.lru_cache(maxsize=64)
def _codec_delay(sr: int, codec: str, bitrate_kbps: float) -> int:
    """Samples the decoded stream lags the input by when it is not gapless, measured once per setting.

    LAME records its encoder delay and padding in an info frame at the start and the decoder trims both,
    but at low bitrates (frames under ~200 bytes: 32 kb/s and below at 16 kHz, 48 kb/s and below at
    22.05-48 kHz) no such tag is written and the decoder returns LAME's delay of 576 + 529 = 1105
    samples in front, and padding behind. Measured on seeded noise by cross-correlation rather than
    assumed, so that another LAME or decoder build stays aligned.
    """
    probe = (0.1 * np.random.default_rng(0).standard_normal(sr // 2)).astype(np.float32)
    decoded = _encode_decode(probe, sr, codec, bitrate_kbps)
    if len(decoded) == len(probe):
        return 0
    span = min(len(decoded), len(probe) + 4 * 1152)
    corr = scipy.signal.correlate(decoded[:span], probe, mode="full", method="fft")[len(probe) - 1:]
    return int(np.argmax(corr))


def lossy_codec(y: np.ndarray, sr: int, *, codec: str = "mp3", bitrate_kbps: int = 64) -> np.ndarray:
    """The clip after an encode/decode round trip through a lossy codec (libsndfile, in memory).

    ``codec="mp3"``: MPEG Layer III through libsndfile's LAME encoder at a constant ``bitrate_kbps``, which
    LAME snaps to the nearest legal MPEG bitrate (8-160 kb/s at 16-24 kHz, 32-320 at 32-48 kHz, 8-64 below
    16 kHz, as libsndfile maps them); the encoded frames measure the requested rate within about 1 %.
    Rates an MP3 cannot carry are resampled to the next one up (and back). What it does to 16 kHz speech:
    LAME low-passes at about 7.5 kHz from 32 kb/s up, about 5.5 kHz at 24 kb/s and 5 kHz at 16 kb/s, and
    the decoded level is about 0.45 dB lower at every bitrate; at 64 kb/s the result is otherwise close
    to the input (correlation ~0.999), at 16 kb/s clearly degraded (~0.97).

    ``codec="ogg"``: Ogg Vorbis, variable bitrate; ``bitrate_kbps`` picks a quality level from a table
    measured on 16 kHz speech (27-82 kb/s), so the real bitrate is approximate.

    The output is aligned with the input (the MP3 encoder delay removed) and exactly ``len(y)`` samples.
    """
    y = _mono(y)
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {CODECS}, got {codec!r}")
    if len(y) == 0:
        return y.copy()
    rate = _mp3_rate(sr) if codec == "mp3" else sr
    x = resample(y, sr, rate) if rate != sr else y
    decoded = _encode_decode(x, rate, codec, float(bitrate_kbps))
    delay = 0 if len(decoded) == len(x) else _codec_delay(rate, codec, float(bitrate_kbps))
    decoded = _fit(decoded[delay:], len(x))
    return _fit(resample(decoded, rate, sr) if rate != sr else decoded, len(y))


# ---------------------------------------------------------------------------------------- level and channel

def gain(y: np.ndarray, *, db: float) -> np.ndarray:
    """``y`` scaled by ``db`` decibels and clipped to [-1, 1], as a recording at that level would clip."""
    y = _mono(y)
    return np.clip(y * np.float32(10.0 ** (db / 20.0)), -1.0, 1.0).astype(np.float32)


def mic_response(y: np.ndarray, sr: int, rng: np.random.Generator, *, max_tilt_db: float = 6.0, peaks: int = 2,
                 max_peak_db: float = 6.0) -> np.ndarray:
    """A random microphone/channel colouring, applied as one zero-phase FFT-domain gain curve.

    The curve (in dB, over log frequency) is a spectral tilt, uniform in +-``max_tilt_db`` from 100 Hz
    to the Nyquist frequency (linear in log frequency, centred on 0 dB), plus ``peaks`` bell-shaped
    peaks or notches, each centred log-uniformly in 200-6000 Hz (capped below Nyquist), gain uniform in
    +-``max_peak_db``, width 0.5-2 octaves. The output has the input's RMS.
    """
    y = _mono(y)
    if len(y) == 0:
        return y.copy()
    nyquist = sr / 2
    tilt = rng.uniform(-max_tilt_db, max_tilt_db)
    bells = []
    for _ in range(peaks):
        centre = math.exp(rng.uniform(math.log(200.0), math.log(min(6000.0, 0.9 * nyquist))))
        bells.append((centre, rng.uniform(-max_peak_db, max_peak_db), rng.uniform(0.5, 2.0)))
    # Zero padding keeps the (short, smooth-curve) response from wrapping around the clip's ends.
    n_fft = scipy.fft.next_fast_len(len(y) + sr // 20, real=True)
    f = scipy.fft.rfftfreq(n_fft, 1.0 / sr)
    octaves = np.log2(np.clip(f, 100.0, nyquist) / 100.0)
    curve_db = tilt * (octaves / max(math.log2(nyquist / 100.0), 1e-9) - 0.5)
    for centre, peak_db, width in bells:
        distance = np.log2(np.maximum(f, 1.0) / centre)
        curve_db += peak_db * np.exp(-0.5 * (distance / (width / 2)) ** 2)
    spectrum = scipy.fft.rfft(y.astype(np.float64), n_fft)
    out = scipy.fft.irfft(spectrum * 10.0 ** (curve_db / 20.0), n_fft)[:len(y)]
    out_power = _power(out)
    if out_power > 0:
        out *= math.sqrt(_power(y) / out_power)
    return out.astype(np.float32)


# ------------------------------------------------------------------------------------- robustness conditions

def _named(name: str, condition: Condition) -> Condition:
    condition.__name__ = condition.__qualname__ = name
    return condition


#: The fixed robustness suite, in report order: ``name -> condition(y, sr, rng, others)``. Each uses only
#: the rng it is given (the caller seeds it per clip) and ``others`` only for babble.
CONDITIONS: dict[str, Condition] = {name: _named(name, condition) for name, condition in {
    "silence-1s": lambda y, sr, rng, others: pad_silence(y, sr, rng, before=1.0, after=1.0),
    "white-20dB": lambda y, sr, rng, others: add_noise(y, sr, rng, snr_db=20.0, color="white"),
    "white-10dB": lambda y, sr, rng, others: add_noise(y, sr, rng, snr_db=10.0, color="white"),
    "babble-20dB": lambda y, sr, rng, others: add_babble(y, sr, rng, snr_db=20.0, others=others, talkers=3),
    "babble-10dB": lambda y, sr, rng, others: add_babble(y, sr, rng, snr_db=10.0, others=others, talkers=3),
    "reverb": lambda y, sr, rng, others: reverberate(y, sr, rng, rt60=0.5),
    "telephone": lambda y, sr, rng, others: telephone(y, sr),
    "mp3-64k": lambda y, sr, rng, others: lossy_codec(y, sr, codec="mp3", bitrate_kbps=64),
    # a quiet recording (a distant talker, a low-gain microphone): what the features read is gain-normalised,
    # speech detection must find the speech all the same
    "quiet-30dB": lambda y, sr, rng, others: gain(y, db=-30.0),
}.items()}


# ------------------------------------------------------------------------------------ training augmentation

@dataclass(frozen=True)
class DegradeSettings:
    """Probabilities and ranges of :func:`random_degradation`, the training-time chain.

    Each ``*_p`` is the probability that step is applied; ranges are ``(low, high)``, drawn uniformly.
    They are wider than the fixed :data:`CONDITIONS` so that the suite's conditions lie inside what
    training has seen. Noise and babble exclude each other (one draw decides: noise with ``noise_p``,
    else babble with ``babble_p`` when other speakers' clips are given).
    """

    pad_p: float = 0.5
    pad_seconds: tuple[float, float] = (0.0, 1.5)  # before and after, drawn separately
    pad_noise_p: float = 0.5  # a noise floor rather than digital silence
    pad_noise_dbfs: tuple[float, float] = (-75.0, -50.0)
    reverb_p: float = 0.3
    reverb_rt60: tuple[float, float] = (0.2, 0.9)
    reverb_direct_ratio_db: tuple[float, float] = (-3.0, 9.0)
    noise_p: float = 0.4
    noise_snr_db: tuple[float, float] = (5.0, 30.0)
    noise_colors: tuple[str, ...] = NOISE_COLORS
    babble_p: float = 0.2
    babble_snr_db: tuple[float, float] = (5.0, 25.0)
    babble_talkers: tuple[int, int] = (2, 6)
    mic_p: float = 0.5
    mic_max_tilt_db: float = 6.0
    mic_peaks: int = 2
    mic_max_peak_db: float = 6.0
    # Features are gain-normalised, so what a level change teaches is clipping.
    gain_p: float = 0.3
    gain_db: tuple[float, float] = (-10.0, 10.0)
    telephone_p: float = 0.15
    mp3_p: float = 0.15
    mp3_kbps: tuple[int, int] = (32, 128)

    def __post_init__(self):
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name.endswith("_p") and not 0.0 <= value <= 1.0:
                raise ValueError(f"{field.name} must be a probability in [0, 1], got {value}")
            if isinstance(value, tuple) and field.name != "noise_colors" and not value[0] <= value[1]:
                raise ValueError(f"{field.name} must be (low, high) with low <= high, got {value}")
        if self.noise_p + self.babble_p > 1.0:
            raise ValueError("noise_p + babble_p must be <= 1 (at most one of noise and babble is applied)")
        bad = [c for c in self.noise_colors if c not in NOISE_COLORS]
        if bad or not self.noise_colors:
            raise ValueError(f"noise_colors must be a non-empty subset of {NOISE_COLORS}, got {self.noise_colors}")

    @classmethod
    def from_dict(cls, values: dict | None) -> "DegradeSettings":
        """Settings over the defaults from a config's ``degrade_args`` (JSON or TOML: lists become ranges)."""
        values = dict(values or {})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown degrade setting(s) {', '.join(sorted(unknown))}; "
                             f"choose among {', '.join(f.name for f in fields(cls))}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def random_degradation(y: np.ndarray, sr: int, rng: np.random.Generator, *, others: Sequence[np.ndarray] = (),
                       settings: DegradeSettings = DegradeSettings()) -> np.ndarray:
    """A random chain of degradations for training, in the order a real recording suffers them.

    Padding (the talker pauses; a noise floor or digital silence), room (reverb), background (noise, or
    babble of ``others``, measured against the unpadded clip's power), microphone colouring, recording
    level (gain, clipping), transmission (telephone), storage (MP3). Each step is applied with its
    probability in ``settings``; with the defaults about 5 % of calls without ``others`` apply none and
    return the clip unchanged (clean examples belong in the mix). The output is clipped to [-1, 1], as
    any stored recording is.
    """
    s = settings
    y = _mono(y)
    reference = _power(y)  # SNRs are relative to the speech, not to speech plus added pauses
    x = y
    if rng.random() < s.pad_p:
        before, after = rng.uniform(*s.pad_seconds, size=2)
        floor = rng.uniform(*s.pad_noise_dbfs) if rng.random() < s.pad_noise_p else None
        x = pad_silence(x, sr, rng, before=before, after=after, noise_dbfs=floor)
    if rng.random() < s.reverb_p:
        x = reverberate(x, sr, rng, rt60=rng.uniform(*s.reverb_rt60),
                        direct_ratio_db=rng.uniform(*s.reverb_direct_ratio_db))
    background = rng.random()
    if background < s.noise_p:
        color = s.noise_colors[int(rng.integers(len(s.noise_colors)))]
        x = add_noise(x, sr, rng, snr_db=rng.uniform(*s.noise_snr_db), color=color, signal_power=reference)
    elif len(others) and background < s.noise_p + s.babble_p:
        talkers = int(rng.integers(s.babble_talkers[0], s.babble_talkers[1] + 1))
        x = add_babble(x, sr, rng, snr_db=rng.uniform(*s.babble_snr_db), others=others, talkers=talkers,
                       signal_power=reference)
    if rng.random() < s.mic_p:
        x = mic_response(x, sr, rng, max_tilt_db=s.mic_max_tilt_db, peaks=s.mic_peaks,
                         max_peak_db=s.mic_max_peak_db)
    if rng.random() < s.gain_p:
        x = gain(x, db=rng.uniform(*s.gain_db))
    if rng.random() < s.telephone_p:
        x = telephone(x, sr)
    if rng.random() < s.mp3_p:
        x = lossy_codec(x, sr, codec="mp3", bitrate_kbps=int(rng.integers(s.mp3_kbps[0], s.mp3_kbps[1] + 1)))
    return np.clip(x, -1.0, 1.0).astype(np.float32)
