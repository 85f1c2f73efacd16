"""Feature extraction shared by training and the service.

A feature set is a small frozen dataclass: its fields are every setting that changes the numbers, it is
written into a model's ``metadata.json`` (:meth:`to_dict`) and read back by the service
(:func:`settings_from_dict`), and its :meth:`extract` is the one code path from decoded audio to the
model's input, whoever calls it.

Every feature set returns a float32 array of shape ``(steps, dims)``: the sequence an LSTM reads.

Example::

    >>> from training.audio import read_audio
    >>> from training.features import FEATURE_SETS
    >>> seed = FEATURE_SETS["seed"]
    >>> seed.extract(read_audio("data/emodb/wav/03a01Fa.flac")).shape
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

from training.audio import Audio, AudioTooShortError, to_mono

#: Bump when the computation behind a feature kind changes without its settings changing;
#: it is part of every cache key, so stale cached features are never reused.
FEATURE_CODE_VERSION = 1

#: Resampler used everywhere (librosa.load's default), so training and service agree sample for sample.
RESAMPLER = "soxr_hq"


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    if orig_sr == target_sr:
        return y
    return librosa.resample(y, orig_sr=orig_sr, target_sr=target_sr, res_type=RESAMPLER)


@functools.lru_cache(maxsize=32)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int = 128, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """``librosa.filters.mel``, built once per setting (librosa rebuilds it on every call unless its disk
    cache is configured; that was a quarter of the service's time per request)."""
    basis = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
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

    def extract(self, audio: Audio) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    def fingerprint(self) -> str:
        """Short hash of everything that determines the output: settings, code version, librosa version."""
        payload = json.dumps(
            {"settings": self.to_dict(), "code": FEATURE_CODE_VERSION, "librosa": librosa.__version__},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

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

    def extract(self, audio: Audio) -> np.ndarray:
        y = window(audio.samples, audio.sample_rate, self.offset, self.duration)
        self._require(y, audio.sample_rate, self.min_seconds, f"the window after {self.offset:g} s")
        y = resample(np.ascontiguousarray(to_mono(y)), audio.sample_rate, self.sample_rate)
        coefficients = mfcc(y, self.sample_rate, self.n_mfcc)
        return np.mean(coefficients.T, axis=0).astype(np.float32)[:, None]


#: Every feature kind by the name stored in metadata.
FEATURE_KINDS: dict[str, type[FeatureSet]] = {cls.kind: cls for cls in (MeanMFCC,)}

#: Named presets selectable with ``--features``.
FEATURE_SETS: dict[str, FeatureSet] = {
    "seed": MeanMFCC(),
}


def settings_from_dict(data: dict[str, Any]) -> FeatureSet:
    """Rebuild a feature set from :meth:`FeatureSet.to_dict` output (e.g. a model's metadata)."""
    data = dict(data)
    kind = data.pop("kind", None)
    if kind not in FEATURE_KINDS:
        raise ValueError(f"unknown feature kind {kind!r}; known: {', '.join(sorted(FEATURE_KINDS))}")
    cls = FEATURE_KINDS[kind]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown settings for {kind}: {', '.join(sorted(unknown))}")
    return cls(**data)
