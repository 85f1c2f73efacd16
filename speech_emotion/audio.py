"""Audio decoding shared by training and the service.

One decoder for every caller: a training run reading a corpus from disk and the service reading an
upload both go through :func:`read_audio`, so a file is turned into samples the same way everywhere.
Decoding is libsndfile's (via ``soundfile``): WAV (8/16/24/32-bit integer and float), FLAC, OGG/Vorbis,
AIFF and MP3, recognised by their content rather than their extension (an AIFF file named ``.wav``
decodes as AIFF).

Example::

    >>> from speech_emotion.audio import read_audio
    >>> audio = read_audio("data/emodb/wav/03a01Fa.flac")
    >>> audio.sample_rate, audio.channels, round(audio.duration, 2)
    (16000, 1, 1.9)
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

#: File extensions treated as audio when scanning a corpus folder.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".aifc", ".mp3")

Source = str | os.PathLike | BinaryIO | bytes


class AudioError(ValueError):
    """Audio that cannot be used; the message says why, in words a user can act on."""


class AudioDecodeError(AudioError):
    """The bytes are not audio libsndfile can decode (wrong format, truncated, empty)."""


class AudioInvalidError(AudioDecodeError):
    """Decoded, but the samples are not numbers (NaN or infinity: a damaged float file)."""


class AudioTooShortError(AudioError):
    """Decoded fine, but too short for the feature settings to analyse."""


@dataclass(frozen=True)
class Audio:
    """Decoded samples as float32 in [-1, 1], shape ``(frames,)`` for mono or ``(frames, channels)``."""

    samples: np.ndarray
    sample_rate: int
    channels: int
    format: str = ""
    subtype: str = ""

    @property
    def duration(self) -> float:
        return self.samples.shape[0] / self.sample_rate

    def mono(self) -> np.ndarray:
        """Average of the channels, as librosa's ``to_mono`` does."""
        return to_mono(self.samples)


def to_mono(samples: np.ndarray) -> np.ndarray:
    if samples.ndim == 1:
        return samples
    return np.mean(samples, axis=1, dtype=np.float32)


#: Resampler used everywhere (librosa.load's default), so training and service agree sample for sample.
RESAMPLER = "soxr_hq"


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """``librosa.resample(y, orig_sr=..., target_sr=..., res_type="soxr_hq")`` along the last axis, sample for
    sample (tested): soxr's output fixed to librosa's length, ``ceil(n * target_sr / orig_sr)``. Called here
    directly, because librosa's first resample in a process loads its numba-compiled modules: about 1.5 s
    of a fresh worker's start, for a call that then takes a millisecond."""
    if orig_sr == target_sr:
        return y
    import soxr

    n = int(np.ceil(y.shape[-1] * (float(target_sr) / orig_sr)))
    if y.ndim == 1:
        out = soxr.resample(y, orig_sr, target_sr, quality=RESAMPLER)
    else:
        out = np.apply_along_axis(soxr.resample, -1, y, in_rate=orig_sr, out_rate=target_sr, quality=RESAMPLER)
    if out.shape[-1] > n:
        out = out[..., :n]
    elif out.shape[-1] < n:
        out = np.pad(out, [(0, 0)] * (out.ndim - 1) + [(0, n - out.shape[-1])])
    return np.asarray(out, dtype=y.dtype)


def _open(source: Source):
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(source)
    return source


def _describe(source: Source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return getattr(source, "name", None) or "upload"


def read_audio(source: Source, *, name: str | None = None) -> Audio:
    """Decode ``source`` (a path, a binary file object or bytes) to float32 samples, all of it.

    Windows (offset, duration) and resampling belong to the feature settings, see
    :mod:`speech_emotion.features`, so that they travel with a model.

    Raises :class:`AudioDecodeError` with libsndfile's reason when the source is not decodable audio, and
    :class:`AudioInvalidError` when it decodes to NaN or infinite samples; messages start with ``name``
    (default: the path, or "upload").
    """
    what = name or _describe(source)
    if isinstance(source, (str, os.PathLike)) and not os.path.exists(source):
        raise AudioDecodeError(f"{what}: no such file")
    if isinstance(source, (bytes, bytearray, memoryview)) and len(source) == 0:
        raise AudioDecodeError(f"{what}: empty file (0 bytes)")
    try:
        with sf.SoundFile(_open(source)) as f:
            sr = int(f.samplerate)
            if sr <= 0 or f.channels <= 0:
                raise AudioDecodeError(f"{what}: invalid header (sample rate {sr}, {f.channels} channels)")
            samples = f.read(dtype="float32", always_2d=False)
            if samples.shape[0] == 0:
                raise AudioDecodeError(f"{what}: no audio frames in file")
            if not np.isfinite(samples).all():  # float files can hold them; no feature means anything then
                bad = int(np.count_nonzero(~np.isfinite(samples)))
                raise AudioInvalidError(f"{what}: {bad} of its samples are NaN or infinite (a damaged float file)")
            return Audio(
                samples=np.ascontiguousarray(samples),
                sample_rate=sr,
                channels=int(f.channels),
                format=f.format,
                subtype=f.subtype,
            )
    except AudioError:
        raise
    except FileNotFoundError as exc:
        raise AudioDecodeError(f"{what}: no such file") from exc
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as exc:
        raise AudioDecodeError(f"{what}: not decodable audio ({_reason(exc)})") from exc


def _reason(exc: Exception) -> str:
    reason = str(exc).split(": ", 1)[-1] if isinstance(exc, sf.LibsndfileError) else str(exc)
    return reason.strip().rstrip(".")


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    frames: int
    format: str

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def audio_info(path: str | Path) -> AudioInfo:
    """Header facts without decoding the samples; raises :class:`AudioDecodeError` like :func:`read_audio`."""
    if not os.path.exists(path):
        raise AudioDecodeError(f"{path}: no such file")
    try:
        info = sf.info(str(path))
    except FileNotFoundError as exc:
        raise AudioDecodeError(f"{path}: no such file") from exc
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as exc:
        raise AudioDecodeError(f"{path}: not decodable audio ({_reason(exc)})") from exc
    if info.samplerate <= 0 or info.frames <= 0:
        raise AudioDecodeError(f"{path}: no audio frames in file")
    return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames), info.format)
