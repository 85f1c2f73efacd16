"""Speech detection shared by training and the service: which parts of a recording hold speech.

Features are computed on speech only: leading and trailing non-speech is removed and long pauses inside
are shortened, so one clip sounds the same to the model whether it was cut tightly (as the training corpus
is) or recorded with a second of room noise around it (as users' recordings are). A recording with no
speech at all raises :class:`NoSpeechError`, which the service answers with ``422 no_speech``.

The detector is WebRTC's voice-activity detector (``webrtcvad``, the GMM-based VAD of the WebRTC project)
at its most aggressive mode, with an energy gate relative to the recording's own noise floor. It was
chosen by measurement (``benchmarks/vad.py``, results in ``benchmarks/README.md``): Silero VAD separates
speech from noise better, but costs several times the whole feature extraction per clip, which the
service's latency budget does not allow; WebRTC alone marks most stationary-noise padding as speech, which
the gate removes; and WebRTC hears less and less of quiet speech, so a quiet recording is read as if it were
at a fixed level (``level_db``): the speech found does not depend on the recording's level, as the
features do not.

Its settings are a frozen dataclass carried in the feature settings (``LogMelFrames.speech``), so they
are written into every model's ``metadata.json`` and a model is always fed the way it was trained.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from speech_emotion.audio import AudioError, resample

#: Rates WebRTC's detector accepts; other audio is resampled to 16 kHz first.
_WEBRTC_RATES = (8000, 16000, 32000, 48000)


class NoSpeechError(AudioError):
    """The recording holds no speech (silence, noise, a click): there is nothing to recognise."""


@dataclass(frozen=True)
class SpeechDetector:
    """Speech regions of a recording, and the recording cut down to them.

    A frame is speech when WebRTC's VAD (``aggressiveness`` 0-3) says so and its energy is at least
    ``gate_db`` above the recording's noise floor (the ``floor_percentile`` of its frame energies) and
    no more than ``range_db`` below its loudest frame. WebRTC's detector reads absolute levels (a minimum
    energy, models of speech and noise at a typical recording level), and finds less and less of quiet
    speech: with ``level_db`` set, a recording whose loudest frame is quieter than that (dBFS, the frame's
    RMS) is brought up to it, by at most ``max_gain_db``, before WebRTC reads it (the gate is relative and
    reads the recording as it is). Runs of speech shorter than ``min_run`` are dropped
    (clicks, knocks); each region keeps ``margin`` seconds of context either side; pauses between
    regions longer than ``max_pause`` are cut down to it. Fewer than ``min_speech`` seconds of speech in
    all: no speech.
    """

    kind: str = "webrtc"
    aggressiveness: int = 3
    frame_ms: int = 30
    gate_db: float = 6.0
    floor_percentile: float = 10.0
    range_db: float = 50.0
    min_run: float = 0.09
    margin: float = 0.1
    max_pause: float = 0.3
    min_speech: float = 0.25
    #: None: WebRTC reads the recording at its own level, as detectors saved before this setting did.
    level_db: float | None = None
    #: Near-silence (dither, a quiet room) stays quiet: raised by no more than this.
    max_gain_db: float = 30.0

    def __post_init__(self):
        if self.kind != "webrtc":
            raise ValueError(f"speech detector kind must be 'webrtc', not {self.kind!r}")
        if self.aggressiveness not in (0, 1, 2, 3) or self.frame_ms not in (10, 20, 30):
            raise ValueError("aggressiveness is 0-3 and frame_ms 10, 20 or 30")
        if self.max_gain_db < 0:
            raise ValueError("max_gain_db raises quiet audio: it is 0 or more")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if self.level_db is None:  # the settings of a detector saved before level_db existed, unchanged
            del data["level_db"], data["max_gain_db"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SpeechDetector":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown speech detector settings: {', '.join(sorted(unknown))}")
        return cls(**data)

    # ------------------------------------------------------------------------------------- detection

    def frames(self, y: np.ndarray, sample_rate: int) -> np.ndarray:
        """One boolean per ``frame_ms`` frame: speech or not (before runs, margins and pauses)."""
        import webrtcvad

        if sample_rate not in _WEBRTC_RATES:
            y, sample_rate = resample(y, sample_rate, 16000), 16000
        hop = sample_rate * self.frame_ms // 1000
        n = len(y) // hop
        if n == 0:
            return np.zeros(0, dtype=bool)
        y = np.asarray(y[: n * hop], dtype=np.float32)
        power = np.mean(y.reshape(n, hop).astype(np.float64) ** 2, axis=1)
        energy = 10 * np.log10(power + 1e-12)
        pcm = np.clip(y, -1.0, 1.0) * 32767
        if self.level_db is not None and power.max() > 0:
            below = self.level_db - 10 * np.log10(power.max())
            if below > 0:
                pcm *= 10 ** (min(below, self.max_gain_db) / 20)
                np.clip(pcm, -32767, 32767, out=pcm)
        pcm = pcm.astype("<i2").tobytes()
        vad = webrtcvad.Vad(self.aggressiveness)
        step = 2 * hop
        voiced = np.fromiter((vad.is_speech(pcm[i * step:(i + 1) * step], sample_rate) for i in range(n)),
                             dtype=bool, count=n)
        floor = np.percentile(energy, self.floor_percentile)
        return voiced & (energy >= floor + self.gate_db) & (energy >= energy.max() - self.range_db)

    def runs(self, y: np.ndarray, sample_rate: int) -> list[tuple[float, float]]:
        """Runs of speech frames as ``(start, end)`` seconds, runs shorter than ``min_run`` dropped."""
        hop_s = self.frame_ms / 1000
        min_frames = int(np.ceil(self.min_run / hop_s - 1e-9))
        return [(a * hop_s, b * hop_s) for a, b in _runs(self.frames(y, sample_rate)) if b - a >= min_frames]

    def regions(self, y: np.ndarray, sample_rate: int, runs: list[tuple[float, float]] | None = None
                ) -> list[tuple[int, int]]:
        """Speech regions as ``(start, end)`` sample indices: the runs with ``margin`` added, merged."""
        regions: list[tuple[int, int]] = []
        for a, b in self.runs(y, sample_rate) if runs is None else runs:
            start = max(0, int(round((a - self.margin) * sample_rate)))
            end = min(len(y), int(round((b + self.margin) * sample_rate)))
            if regions and start <= regions[-1][1]:
                regions[-1] = (regions[-1][0], max(end, regions[-1][1]))
            else:
                regions.append((start, end))
        return regions

    def speech_seconds(self, y: np.ndarray, sample_rate: int) -> float:
        """Seconds of speech found: the runs of speech frames, without margins or pauses."""
        return float(sum(b - a for a, b in self.runs(y, sample_rate)))

    def keep(self, y: np.ndarray, sample_rate: int, runs: list[tuple[float, float]] | None = None) -> np.ndarray:
        """The speech of ``y``: leading and trailing non-speech removed, pauses longer than ``max_pause``
        shortened to it (half of it kept after one region, half before the next). Raises
        :class:`NoSpeechError` when less than ``min_speech`` seconds of speech are found. ``runs``: this
        detector's :meth:`runs` of ``y``, when the caller has them already."""
        runs = self.runs(y, sample_rate) if runs is None else runs
        found = sum(b - a for a, b in runs)
        if found < self.min_speech:
            raise NoSpeechError(f"no speech found ({found:.2f} s of speech-like sound, at least "
                                f"{self.min_speech:g} s needed): silence, noise or a click holds no emotion to "
                                "recognise")
        regions = self.regions(y, sample_rate, runs)
        if len(regions) == 1:
            a, b = regions[0]
            return y[a:b]
        half = int(self.max_pause * sample_rate / 2)
        parts = []
        for k, (a, b) in enumerate(regions):
            parts.append(y[a:b])
            if k + 1 < len(regions):
                c = regions[k + 1][0]
                gap = c - b
                if gap <= 2 * half:
                    parts.append(y[b:c])
                else:
                    parts += [y[b:b + half], y[c - half:c]]
        return np.concatenate(parts)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``(start, end)`` of every run of True in ``mask``."""
    if not mask.any():
        return []
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


#: The detector of every feature preset that uses one, and the service's gate for models trained without.
#: Quiet recordings are read at -15 dBFS (the loudest frame): just under the bundled corpus's quietest clip
#: (-14.7 dBFS), so none of its clips changes, and where WebRTC finds nearly all the speech it finds at full
#: scale (benchmarks/vad.py, "quiet -40 dBFS").
DEFAULT_DETECTOR = SpeechDetector(level_db=-15.0)
