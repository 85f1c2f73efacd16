"""Feature extraction shared by training and the service.

A feature set is a small frozen dataclass: its fields are every setting that changes the numbers, it is
written into a model's ``metadata.json`` (:meth:`to_dict`) and read back by the service
(:func:`settings_from_dict`), and its :meth:`extract` is the one code path from decoded audio to the
model's input, whoever calls it.

Every feature set returns a float32 array of shape ``(steps, dims)``: the sequence an LSTM reads.

Example::

    >>> from speech_emotion.audio import read_audio
    >>> from speech_emotion.features import FEATURE_SETS
    >>> notebook = FEATURE_SETS["notebook"]
    >>> notebook.extract(read_audio("data/emodb/wav/03a01Fa.flac")).shape
    (40, 1)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any, ClassVar

import librosa
import numpy as np
import scipy.fft

from speech_emotion.audio import Audio, AudioTooShortError, resample, to_mono
from speech_emotion.speech import DEFAULT_DETECTOR, SpeechDetector

#: Bump when the computation behind a feature kind changes without its settings changing;
#: it is part of every cache key, so stale cached features are never reused.
FEATURE_CODE_VERSION = 5

# Slaney's mel scale (librosa's default, ``htk=False``): linear under 1 kHz, logarithmic above.
_MEL_STEP_HZ = 200.0 / 3
_MEL_LOG_HZ = 1000.0
_MEL_LOG_START = _MEL_LOG_HZ / _MEL_STEP_HZ
_MEL_LOG_STEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: float) -> float:
    return _MEL_LOG_START + np.log(hz / _MEL_LOG_HZ) / _MEL_LOG_STEP if hz >= _MEL_LOG_HZ else hz / _MEL_STEP_HZ


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    hz = _MEL_STEP_HZ * mels
    log = mels >= _MEL_LOG_START
    hz[log] = _MEL_LOG_HZ * np.exp(_MEL_LOG_STEP * (mels[log] - _MEL_LOG_START))
    return hz


@functools.lru_cache(maxsize=32)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int = 128, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """``librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)``: triangular
    filters on Slaney's mel scale, each scaled to unit area, float32, shape ``(n_mels, 1 + n_fft // 2)``.

    The same operations in the same order, equal bit for bit (tested against librosa), and built once per
    setting. Not librosa's own because importing ``librosa.filters`` loads scipy.signal and numba: over a
    second of every process's start, in a service worker and in each of ``score``'s workers.
    """
    fmax = float(sample_rate) / 2 if fmax is None else fmax
    fft_hz = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    mel_hz = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    width = np.diff(mel_hz)
    ramps = np.subtract.outer(mel_hz, fft_hz)
    basis = np.zeros((n_mels, len(fft_hz)), dtype=np.float32)
    for i in range(n_mels):
        basis[i] = np.maximum(0, np.minimum(-ramps[i] / width[i], ramps[i + 2] / width[i + 1]))
    basis *= (2.0 / (mel_hz[2:n_mels + 2] - mel_hz[:n_mels]))[:, np.newaxis]
    basis.setflags(write=False)
    return basis


# Two operands contract one way; giving einsum the path saves its search on every call.
_MEL_EINSUM_PATH = ["einsum_path", (0, 1)]


def mfcc(y: np.ndarray, sample_rate: int, n_mfcc: int, *, n_fft: int = 2048, hop_length: int = 512,
         n_mels: int = 128) -> np.ndarray:
    """``librosa.feature.mfcc(y=y, sr=sample_rate, n_mfcc=n_mfcc)`` step for step, with the filterbank cached.

    Identical output, bit for bit (tested against librosa); shape ``(n_mfcc, frames)``.
    """
    power = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop_length)) ** 2.0
    mel = np.einsum("...ft,mf->...mt", power, mel_filterbank(sample_rate, n_fft, n_mels), optimize=_MEL_EINSUM_PATH)
    return librosa.get_fftlib().dct(librosa.power_to_db(mel), axis=-2, type=2, norm="ortho")[..., :n_mfcc, :]


@functools.lru_cache(maxsize=8)
def _hann(win_length: int) -> np.ndarray:
    """``scipy.signal.get_window("hann", win_length)`` (periodic) as float32, computed as scipy does (equal bit
    for bit, tested) without importing scipy.signal, a second of a process's start."""
    window = (0.5 + 0.5 * np.cos(np.linspace(-np.pi, np.pi, win_length + 1)))[:-1].astype(np.float32)
    window.setflags(write=False)
    return window


def power_spectrogram(y: np.ndarray, *, n_fft: int, hop_length: int, win_length: int) -> np.ndarray:
    """``np.abs(librosa.stft(y, n_fft, hop_length, win_length, center=True)) ** 2`` transposed:
    shape ``(frames, 1 + n_fft // 2)``, float32, equal to librosa's up to float rounding (tested).

    librosa centres a Hann window of ``win_length`` in ``n_fft`` samples; the zeros around it only shift
    the frame in time, which changes the phase of the spectrum and not its magnitude, so each frame here
    is the window's ``win_length`` samples alone, zero-padded to ``n_fft`` at the end. Framing is a
    strided view and the FFT one batched float32 call: 0.23 ms for a 3 s clip against librosa's 0.64 ms,
    which was over a quarter of the service's feature time per request.
    """
    y = np.asarray(y, dtype=np.float32)
    offset = (n_fft - win_length) // 2
    padded = np.pad(y, n_fft // 2)  # center=True, pad_mode="constant", as librosa
    n_frames = 1 + len(y) // hop_length
    frames = np.lib.stride_tricks.sliding_window_view(padded, win_length)[offset::hop_length][:n_frames]
    spectrum = scipy.fft.rfft(frames * _hann(win_length), n_fft, axis=1)
    return spectrum.real ** 2 + spectrum.imag ** 2


#: Energy of a YIN integration window below which it holds no signal (one 16-bit LSB squared is ~1e-9).
SILENCE_ENERGY = 1e-10
#: How many lags YIN walks on from the first dip under its threshold to that dip's local minimum.
_WALK = 8


def yin(y: np.ndarray, sample_rate: int, *, hop_length: int, frame_length: int, fmin: float = 60.0,
        fmax: float = 500.0, threshold: float = 0.2, voicing: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """YIN (de Cheveigne & Kawahara 2002) per frame: ``(f0_hz, periodicity)``; f0 is 0 where unvoiced.

    Frames are centred on multiples of ``hop_length`` (as ``librosa.stft(center=True)``). The period is the
    first dip of the cumulative mean normalised difference under ``threshold`` (YIN's absolute threshold),
    else its minimum; a frame is voiced when the difference there is under ``voicing`` (default:
    ``threshold``). Periodicity is 1 minus that difference (1 = perfectly periodic).
    """
    min_lag, max_lag = int(sample_rate // fmax), int(np.ceil(sample_rate / fmin))
    y = np.asarray(y, dtype=np.float32)
    padded = np.pad(y, frame_length // 2)
    if len(padded) < frame_length:
        padded = np.pad(padded, (0, frame_length - len(padded)))
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame_length)[::hop_length]  # (n, frame_length)
    window_len = frame_length - max_lag
    if window_len < max_lag:
        raise ValueError(f"frame_length {frame_length} too short for fmin {fmin} Hz at {sample_rate} Hz")
    # Cross term sum_j x[j] x[j + tau] over the integration window j < window_len, for every lag at once,
    # as a circular correlation of each frame with its first window_len samples: with the window
    # zero-padded to the frame's length, j + tau < frame_length for every lag <= max_lag, so nothing wraps
    # and the frame length itself is a large enough FFT. (scipy.fft keeps float32; numpy's would compute
    # in float64, several times slower here.)
    spectrum = scipy.fft.rfft(frames, axis=1)
    acf = scipy.fft.irfft(spectrum * np.conj(scipy.fft.rfft(frames[:, :window_len], frame_length, axis=1)),
                          frame_length, axis=1)[:, : max_lag + 1]
    # Energy of the window starting at every sample, from one running sum; every frame's lagged windows
    # are a strided view of it (no copy).
    running = np.concatenate([[0.0], np.cumsum(padded.astype(np.float64) ** 2)])
    energy = (running[window_len:] - running[:-window_len]).astype(np.float32)
    step = energy.strides[0]
    e_tau = np.lib.stride_tricks.as_strided(energy, (frames.shape[0], max_lag + 1), (hop_length * step, step),
                                            writeable=False)  # (n, max_lag + 1)
    diff = e_tau + e_tau[:, :1]
    acf *= 2
    diff -= acf
    np.maximum(diff, 0.0, out=diff)
    diff[:, 0] = 0.0
    # The cumulative mean normalised difference, at the lags the search reads only (min_lag .. max_lag - 1).
    cumulative = np.cumsum(diff[:, 1:max_lag], axis=1)
    cumulative /= np.arange(1, max_lag, dtype=np.float32)
    np.maximum(cumulative, 1e-12, out=cumulative)
    search = diff[:, min_lag:max_lag] / cumulative[:, min_lag - 1:]
    width = search.shape[1]
    below = search < threshold
    # First dip under the threshold (YIN's absolute threshold step), else the global minimum.
    lag = np.where(below.any(axis=1), np.argmax(below, axis=1), np.argmin(search, axis=1))
    # Walk down to the local minimum of that dip, at most _WALK lags further: read the lags ahead of each
    # frame's at once and advance by how many steps in a row go down.
    ahead = np.arange(_WALK + 1)
    values = np.take_along_axis(search, np.minimum(lag[:, None] + ahead, width - 1), axis=1)
    down = (values[:, 1:] < values[:, :-1]) & (lag[:, None] + ahead[1:] < width)
    lag = lag + np.where(down.all(axis=1), _WALK, np.argmin(down, axis=1))
    rows = np.arange(len(lag))
    best = search[rows, lag]
    # Parabolic interpolation around the minimum for a sub-sample period.
    left = search[rows, np.maximum(lag - 1, 0)]
    right = search[rows, np.minimum(lag + 1, width - 1)]
    curvature = left - 2 * best + right
    shift = np.where(curvature > 1e-12, 0.5 * (left - right) / np.maximum(curvature, 1e-12), 0.0)
    period = lag + min_lag + np.clip(shift, -0.5, 0.5)
    # Digital silence has a difference function of zeros, which would read as perfectly periodic at the
    # shortest lag: a window without signal (below a 16-bit sample's energy) is unvoiced.
    silent = e_tau[:, 0] < SILENCE_ENERGY
    periodicity = np.where(silent, 0.0, np.clip(1.0 - best, 0.0, 1.0))
    f0 = np.where((best < (threshold if voicing is None else voicing)) & ~silent, sample_rate / period, 0.0)
    return f0, periodicity


def median_voiced(f0: np.ndarray, width: int) -> np.ndarray:
    """``f0`` with every voiced value (> 0) replaced by the median of the ``width`` voiced values around it
    (the ends repeated), unvoiced frames left at 0: removes a tracker's short octave jumps."""
    voiced = f0 > 0
    if width <= 1 or not voiced.any():
        return f0
    values = np.pad(f0[voiced], width // 2, mode="edge")
    out = f0.copy()
    out[voiced] = np.median(np.lib.stride_tricks.sliding_window_view(values, width), axis=1)[:voiced.sum()]
    return out


def window(samples: np.ndarray, sample_rate: int, offset: float, duration: float | None) -> np.ndarray:
    """The part of ``samples`` that ``librosa.load(offset=..., duration=...)`` would read."""
    start = int(offset * sample_rate) if offset else 0
    stop = None if duration is None else start + int(duration * sample_rate)
    return samples[start:stop]


def pad_batch(features: list[np.ndarray]) -> np.ndarray:
    """Stack ``(steps, dims)`` arrays into one model input ``(batch, max_steps, dims)``.

    Shorter items are zero-padded at the end; models over variable-length input mask the padding, so an
    item's prediction does not depend on what it is batched with.
    """
    steps = max(f.shape[0] for f in features)
    out = np.zeros((len(features), steps, features[0].shape[1]), dtype=np.float32)
    for i, f in enumerate(features):
        out[i, : f.shape[0]] = f
    return out


@dataclass(frozen=True)
class FeatureSet:
    """Base of the feature sets: serialisation, fingerprint, the too-short check."""

    kind: ClassVar[str]
    #: True for feature sets whose model input depends on a speaker reference (see ``finish``).
    uses_reference: ClassVar[bool] = False

    def base(self, audio: Audio, speech: list[tuple[float, float]] | None = None) -> np.ndarray:  # pragma: no cover
        """What the clip alone determines (training caches this). ``speech``: the runs of speech that the feature
        set's own detector found in the clip's mono signal at 16 kHz, when the caller has them already."""
        raise NotImplementedError

    def finish(self, base: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        """The model input from :meth:`base`; only feature sets with ``uses_reference`` take a reference."""
        if reference is not None:
            raise ValueError(f"{self.kind} features take no speaker reference")
        return base

    def extract(self, audio: Audio, reference: np.ndarray | None = None,
                speech: list[tuple[float, float]] | None = None) -> np.ndarray:
        """The model input for one clip: ``finish(base(audio), reference)``."""
        return self.finish(self.base(audio, speech), reference)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    def fingerprint(self) -> str:
        """Short hash of everything that determines the output: settings, code version, librosa version."""
        payload = json.dumps(
            {"settings": self.to_dict(), "code": FEATURE_CODE_VERSION, "librosa": librosa.__version__},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def base_fingerprint(self) -> str:
        """Fingerprint of what :meth:`base` computes (the feature cache's key; a speaker profile's validity):
        settings that only change :meth:`finish` are left out."""
        return self.fingerprint()

    @property
    def reads_mono_16k(self) -> bool:
        """True when :meth:`base` reads the clip as its channels' mean resampled to 16 kHz, and nothing else of
        it: given that signal (as :class:`Audio`) instead of the clip, it computes the same numbers."""
        return False

    def require_length(self, audio: Audio) -> None:
        """Raise AudioTooShortError when ``audio`` is too short for these features (before any analysis)."""

    @staticmethod
    def _require(y: np.ndarray, sample_rate: int, min_seconds: float, what: str) -> None:
        if y.shape[0] < int(min_seconds * sample_rate):
            raise AudioTooShortError(
                f"too short to analyse: {what} holds {y.shape[0] / sample_rate:.3f} s of audio, "
                f"at least {min_seconds:g} s are needed"
            )


@dataclass(frozen=True)
class MeanMFCC(FeatureSet):
    """The notebook's features: ``librosa.load(path, duration=3, offset=0.5)``, 40 MFCCs, mean over time.

    The result has shape ``(n_mfcc, 1)``: the notebook's LSTM reads the 40 coefficients as 40 steps.
    Audio shorter than ``offset + min_seconds`` cannot be analysed and raises AudioTooShortError.
    """

    kind: ClassVar[str] = "mean_mfcc"
    sample_rate: int = 22050
    offset: float = 0.5
    duration: float | None = 3.0
    n_mfcc: int = 40
    min_seconds: float = 0.1

    def require_length(self, audio: Audio) -> None:
        y = window(audio.samples, audio.sample_rate, self.offset, self.duration)
        self._require(y, audio.sample_rate, self.min_seconds, f"the window after {self.offset:g} s")

    def base(self, audio: Audio, speech: list[tuple[float, float]] | None = None) -> np.ndarray:
        self.require_length(audio)  # reads every sample of its window: ``speech`` does not apply
        y = window(audio.samples, audio.sample_rate, self.offset, self.duration)
        y = resample(np.ascontiguousarray(to_mono(y)), audio.sample_rate, self.sample_rate)
        coefficients = mfcc(y, self.sample_rate, self.n_mfcc)
        return np.mean(coefficients.T, axis=0).astype(np.float32)[:, None]


@functools.lru_cache(maxsize=8)
def envelope_matrix(n_bins: int, lifter: int) -> np.ndarray:
    """``(n_bins, n_bins)``: a log spectrum (bins along the first axis) to its envelope, the same spectrum
    with only its first ``lifter`` cepstral coefficients (DCT-II, orthonormal) kept: what the features'
    ``lifter`` setting applies to each log-mel frame."""
    cepstrum = scipy.fft.dct(np.eye(n_bins), type=2, norm="ortho", axis=0)
    cepstrum[lifter:] = 0.0
    matrix = scipy.fft.idct(cepstrum, type=2, norm="ortho", axis=0)
    matrix.setflags(write=False)
    return matrix


@dataclass(frozen=True)
class LogMelFrames(FeatureSet):
    """Frames, not averages: a log-mel spectrogram and a pitch track, normalised per utterance.

    16 kHz, 25 ms windows every 10 ms; every frame of the clip is kept (no cropping), so the result has
    shape ``(frames, n_mels * (1 + deltas) + 2 * pitch)`` with ``frames`` about 100 per second. The
    normalisation uses the utterance alone (each feature group to zero mean and unit variance): it removes the
    recording's gain and nothing about the speaker is needed at prediction time.
    """

    kind: ClassVar[str] = "logmel_frames"
    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 64
    fmin: float = 50.0
    fmax: float = 8000.0
    #: Log-mel values are floored this many dB under the clip's loudest bin. 80 dB keeps the recording's own
    #: noise floor in view, and with it how noisy the room and microphone were; a lower ceiling (e.g. 50 dB)
    #: makes quiet and noisy recordings of the same speech look alike.
    floor_db: float = 80.0
    #: 0: log-mel only (the default: on EMO-DB leave-one-speaker-out the model learns its own time
    #: derivatives better; see benchmarks/README.md); 1: + delta; 2: + delta-delta.
    deltas: int = 0
    delta_width: int = 9
    #: "none": the model reads the utterance-normalised frames. "speaker": each log-mel bin also has a
    #: reference removed: the speaker's mean spectrum over clips of theirs (a speaker profile) when one is
    #: given, else the clip's own mean. Removes the voice's and the channel's spectral colouring, the
    #: per-speaker normalisation of the published baselines, and still answers a single clip.
    reference: str = "none"
    #: Add two pitch columns (YIN at 8 kHz): F0 in semitones relative to the utterance's median voiced F0
    #: (intonation and range, not the speaker's register), 0 when unvoiced; and periodicity (0-1).
    pitch: bool = True
    #: YIN's absolute threshold: the period is the first lag whose normalised difference dips under it. A frame
    #: is voiced under 0.4 either way. 0.4 for both (the first models) takes a voice's strong second harmonic
    #: for its fundamental in many frames of high voices, an octave too high; 0.15 (the paper's range) does
    #: so far less often.
    pitch_threshold: float = 0.4
    #: Median over this many voiced frames of F0 (1: none): smooths away the octave jumps left.
    pitch_median: int = 1
    #: Keep only the first ``lifter`` cepstral coefficients of each log-mel frame (0: all): the spectral
    #: envelope (formants, tilt) without the fine structure of the voice's harmonics, whose spacing is the
    #: speaker's F0 (about twice as wide for a typical woman's voice as for a man's). The pitch columns keep
    #: the intonation.
    lifter: int = 0
    #: How the mel energies are compressed. "log": their log, floored ``floor_db`` under the loudest bin.
    #: "pcen": per-channel energy normalisation (Wang et al. 2017, ``librosa.pcen``): each band divided by its
    #: own smoothed past (time constant ``pcen_time`` seconds), then root-compressed: a gain control per band
    #: that cancels what stays put (a steady noise, the channel's colouring) and damps what decays slowly (a
    #: room's reverberant tail), keeping the onsets of the speech itself. Floored ``floor_db`` under the loudest
    #: bin first, as the log is.
    compression: str = "log"
    pcen_time: float = 0.4
    min_seconds: float = 0.25
    #: Speech detection (speech_emotion/speech.py): when set, features are computed on the speech of the clip
    #: only (non-speech at the ends removed, long pauses shortened) and a clip without speech raises
    #: NoSpeechError. None: every sample, as models trained before speech detection were fed.
    speech: SpeechDetector | None = None

    def __post_init__(self):
        if isinstance(self.speech, dict):  # from metadata.json
            object.__setattr__(self, "speech", SpeechDetector.from_dict(self.speech))

    #: Settings added after models were first exported, with the value that gives the behaviour from before
    #: them: left out of to_dict() at that value, so the settings (and fingerprints, cache keys, speaker
    #: profiles) of earlier models stay what they were.
    _LATER_SETTINGS: ClassVar[dict[str, Any]] = {"floor_db": 80.0, "speech": None, "pitch_threshold": 0.4,
                                                  "pitch_median": 1, "lifter": 0, "compression": "log",
                                                  "pcen_time": 0.4}
    #: Facts about every instance, once settings: each feature group (log-mel, each delta order) is brought to
    #: zero mean and unit variance over the whole utterance. Still written into to_dict() so that exported
    #: metadata says how a model was fed and every fingerprint (feature caches, speaker profiles) stays as it was.
    FIXED: ClassVar[dict[str, Any]] = {"normalize": "utterance"}

    def to_dict(self) -> dict[str, Any]:
        data = {**super().to_dict(), **self.FIXED}
        for key, before in self._LATER_SETTINGS.items():
            if data.get(key) == before:
                del data[key]
        return data

    def waveform(self, audio: Audio, runs: list[tuple[float, float]] | None = None) -> np.ndarray:
        """Mono float32 at ``sample_rate``, speech only when ``speech`` is set: what :meth:`frames` reads.
        ``runs``: the detector's runs of speech in this signal, when already found (at 16 kHz only)."""
        self.require_length(audio)
        y = resample(np.ascontiguousarray(to_mono(audio.samples)), audio.sample_rate, self.sample_rate)
        if self.speech is None:
            return y
        return self.speech.keep(y, self.sample_rate, runs if self.sample_rate == 16000 else None)

    def require_length(self, audio: Audio) -> None:
        self._require(audio.samples, audio.sample_rate, self.min_seconds, "the clip")

    @property
    def reads_mono_16k(self) -> bool:  # type: ignore[override]
        return self.sample_rate == 16000  # waveform(): to_mono, then resample to sample_rate

    def frames(self, y: np.ndarray) -> np.ndarray:
        """``(frames, dims)`` features of a mono signal at ``sample_rate``."""
        spec = power_spectrogram(y, n_fft=self.n_fft, hop_length=self.hop_length, win_length=self.win_length)
        mel = (spec @ mel_filterbank(self.sample_rate, self.n_fft, self.n_mels, self.fmin, self.fmax).T).T
        # Floor ``floor_db`` under the loudest bin: relative, so the recording's gain cancels out exactly.
        floored = mel + 10.0 ** (-self.floor_db / 10) * mel.max() + 1e-30
        if self.compression == "log":
            logmel = np.log(floored)
        elif self.compression == "pcen":
            # On magnitudes scaled to a fixed peak (librosa's example scales 16-bit-range audio likewise). The
            # floor first: without it, bands quiet in the clean clip are raised to the level of any noise.
            magnitude = np.sqrt(floored)
            logmel = librosa.pcen(magnitude * (2.0 ** 31 / magnitude.max()), sr=self.sample_rate,
                                  hop_length=self.hop_length, time_constant=self.pcen_time)
        else:
            raise ValueError(f"compression must be 'log' or 'pcen', not {self.compression!r}")
        if self.lifter:
            logmel = envelope_matrix(self.n_mels, self.lifter) @ logmel
        parts = [logmel]
        if self.deltas and logmel.shape[1] >= self.delta_width:
            for order in range(1, self.deltas + 1):
                parts.append(librosa.feature.delta(logmel, width=self.delta_width, order=order))
        elif self.deltas:  # too few frames for the delta window: zero deltas keep the shape
            parts += [np.zeros_like(logmel)] * self.deltas
        if self.reference not in ("none", "speaker"):
            raise ValueError(f"reference must be 'none' or 'speaker', not {self.reference!r}")
        feats = np.concatenate([(p - p.mean()) / (p.std() + 1e-5) for p in parts], axis=0).T
        if self.pitch:
            feats = np.concatenate([feats, self._pitch(y, feats.shape[0])], axis=1)
        return feats.astype(np.float32)

    def _pitch(self, y: np.ndarray, n_frames: int) -> np.ndarray:
        low_rate = 8000
        y8 = resample(y, self.sample_rate, low_rate)
        hop = self.hop_length * low_rate // self.sample_rate
        f0, periodicity = yin(y8, low_rate, hop_length=hop, frame_length=320, threshold=self.pitch_threshold,
                              voicing=0.4)
        f0 = median_voiced(f0, self.pitch_median)
        voiced = f0 > 0
        semitones = np.zeros_like(f0)
        if voiced.any():
            semitones[voiced] = 12 * np.log2(f0[voiced] / np.median(f0[voiced]))
        out = np.zeros((n_frames, 2), dtype=np.float32)
        m = min(n_frames, len(f0))
        out[:m, 0] = semitones[:m] / 6.0  # +-6 semitones -> +-1, on the scale of the other columns
        out[:m, 1] = periodicity[:m]
        return out

    def base(self, audio: Audio, speech: list[tuple[float, float]] | None = None) -> np.ndarray:
        return self.frames(self.waveform(audio, speech))

    @property
    def uses_reference(self) -> bool:  # type: ignore[override]
        return self.reference == "speaker"

    def base_fingerprint(self) -> str:
        return dataclasses.replace(self, reference="none").fingerprint()

    def finish(self, base: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        """With ``reference="speaker"``: every log-mel bin minus ``reference`` (the speaker's mean log-mel
        spectrum, shape ``(n_mels,)``, from :mod:`speech_emotion.profiles`), or minus the clip's own mean without one."""
        if self.reference == "none":
            return super().finish(base, reference)
        if reference is None:
            reference = base[:, :self.n_mels].mean(axis=0)
        reference = np.asarray(reference, dtype=np.float32)
        if reference.shape != (self.n_mels,):
            raise ValueError(f"a speaker reference has {self.n_mels} values (one per mel bin), not {reference.shape}")
        out = base.copy()
        out[:, :self.n_mels] -= reference
        return out


#: Every feature kind by the name stored in metadata.
FEATURE_KINDS: dict[str, type[FeatureSet]] = {cls.kind: cls for cls in (MeanMFCC, LogMelFrames)}

#: Named presets selectable with ``--features``.
FEATURE_SETS: dict[str, FeatureSet] = {
    "notebook": MeanMFCC(),
    "logmel": LogMelFrames(),
    "logmel-speaker": LogMelFrames(reference="speaker"),
    # The same on speech only (speech_emotion/speech.py): what a recording with silence or noise around the
    # speech needs to sound like the tightly cut clips of a training corpus.
    "logmel-speaker-vad": LogMelFrames(reference="speaker", speech=DEFAULT_DETECTOR),
    # ... and with the log-mel floored 40 dB under the clip's loudest bin, so that recordings with different
    # noise floors (a quiet studio, a noisy room) look alike; the features of the crnn-robust recipe.
    "logmel-robust": LogMelFrames(reference="speaker", speech=DEFAULT_DETECTOR, floor_db=40.0),
    # The same without the speaker reference: each clip read on its own. The clip's mean spectrum that the
    # reference removes also carries the voice quality of the emotion (a breathy, tilted spectrum or a
    # pressed, flat one), and a single clip has nothing else to tell it from the speaker's own colouring.
    "logmel-robust-clip": LogMelFrames(speech=DEFAULT_DETECTOR, floor_db=40.0),
    # ... and only the band under 4 kHz, which a telephone line, many codecs and cheap microphones keep: its
    # 64 bands read the same on them as on studio recordings, and they resolve the voice's lower formants
    # more finely. Better across corpora (benchmarks/README.md); the default recipe's features.
    "logmel-robust-4k": LogMelFrames(speech=DEFAULT_DETECTOR, floor_db=40.0, fmax=4000.0),
    # ... with fewer octave errors in the pitch track (YIN's threshold 0.15 and a median over 5 voiced frames):
    # with 0.4, 11 % of the voiced frames of TESS's neutral clips read an octave from the rest. Not better
    # across corpora (benchmarks/results/2026-12-02-pitch-octaves.md); kept to combine with later changes.
    "logmel-robust-4k-pitch": LogMelFrames(speech=DEFAULT_DETECTOR, floor_db=40.0, fmax=4000.0,
                                           pitch_threshold=0.15, pitch_median=5),
    # ... with each log-mel frame smoothed to its envelope (its first 12 cepstral coefficients, as many as the
    # usual MFCCs): the harmonics of voices up to about 380 Hz are resolved in these bands (a ripple of
    # 4,600 / F0 cycles over the 64), and a high voice and a low one with the same formants look alike. Across
    # corpora it helps a model of TESS's two women and hurts one of EMO-DB's ten voices
    # (benchmarks/results/2026-12-02-spectral-envelope.md): for training on few speakers of one sex.
    "logmel-robust-4k-envelope": LogMelFrames(speech=DEFAULT_DETECTOR, floor_db=40.0, fmax=4000.0, lifter=12),
    # ... with per-channel energy normalisation instead of the floored log: for noise and rooms. Its frames
    # of degraded clips sit about half as far from the clean ones, but across corpora it is no better and
    # loses angry, within EMO-DB lower, and white noise hurts it more (benchmarks/results/2026-12-07-pcen.md);
    # kept to combine (a lower PCEN gain, or beside the log bands).
    "logmel-robust-4k-pcen": LogMelFrames(speech=DEFAULT_DETECTOR, floor_db=40.0, fmax=4000.0, compression="pcen"),
}


def settings_from_dict(data: dict[str, Any]) -> FeatureSet:
    """Rebuild a feature set from :meth:`FeatureSet.to_dict` output (e.g. a model's metadata)."""
    data = dict(data)
    kind = data.pop("kind", None)
    if kind not in FEATURE_KINDS:
        raise ValueError(f"unknown feature kind {kind!r}; known: {', '.join(sorted(FEATURE_KINDS))}")
    cls = FEATURE_KINDS[kind]
    for key, value in getattr(cls, "FIXED", {}).items():
        if data.pop(key, value) != value:
            raise ValueError(f"{kind} features support {key} = {value!r} only")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown settings for {kind}: {', '.join(sorted(unknown))}")
    return cls(**data)
