"""Training-time augmentation of frame features: other speakers and other rooms, simulated.

Each transform is a small function of ``(features, rng)``; :class:`FrameAugment` chains them for a
feature set's layout (groups of ``n_mels`` columns: log-mel, then its deltas). Applied per item, per epoch,
to training items only: validation and test items are never augmented.

- :func:`warp_frequency`: stretch or squeeze the mel axis by a random factor, as a longer or shorter vocal
  tract would (vocal tract length perturbation); the strongest cue for "another speaker".
- :func:`mask_frequency`: blank random bands (SpecAugment): robustness to channel colouring and noise.
- :func:`mask_time`: drop random stretches of frames (SpecAugment): robustness to pauses and dropouts.
- :func:`scale_time`: play the utterance faster or slower (tempo), by resampling frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speech_emotion.features import FeatureSet, LogMelFrames


def warp_frequency(x: np.ndarray, rng: np.random.Generator, *, n_mels: int, max_warp: float) -> np.ndarray:
    """Resample each ``n_mels``-wide group along frequency by a factor in ``[1 - max_warp, 1 + max_warp]``."""
    alpha = rng.uniform(1 - max_warp, 1 + max_warp)
    source = np.clip(np.arange(n_mels) / alpha, 0, n_mels - 1)
    lo = np.floor(source).astype(int)
    hi = np.minimum(lo + 1, n_mels - 1)
    frac = (source - lo).astype(x.dtype)
    out = x.copy()  # columns after the mel groups (pitch) pass through unchanged
    for g in range(x.shape[1] // n_mels):
        block = x[:, g * n_mels:(g + 1) * n_mels]
        out[:, g * n_mels:(g + 1) * n_mels] = block[:, lo] * (1 - frac) + block[:, hi] * frac
    return out


def mask_frequency(x: np.ndarray, rng: np.random.Generator, *, n_mels: int, masks: int, max_width: int
                   ) -> np.ndarray:
    """Set ``masks`` random bands of up to ``max_width`` mel bins to the mean (0), in every group alike."""
    x = x.copy()
    for _ in range(masks):
        width = int(rng.integers(0, max_width + 1))
        start = int(rng.integers(0, max(1, n_mels - width)))
        for g in range(x.shape[1] // n_mels):
            x[:, g * n_mels + start: g * n_mels + start + width] = 0.0
    return x


def mask_time(x: np.ndarray, rng: np.random.Generator, *, masks: int, max_fraction: float) -> np.ndarray:
    """Zero ``masks`` random stretches of up to ``max_fraction`` of the frames (the model skips them)."""
    x = x.copy()
    n = x.shape[0]
    for _ in range(masks):
        width = int(rng.integers(0, int(max_fraction * n) + 1))
        start = int(rng.integers(0, max(1, n - width)))
        x[start: start + width] = 0.0
    return x


def scale_time(x: np.ndarray, rng: np.random.Generator, *, max_scale: float) -> np.ndarray:
    """Linear interpolation of the frames to ``n * s`` frames, ``s`` in ``[1 - max_scale, 1 + max_scale]``."""
    n = x.shape[0]
    m = max(2, int(round(n * rng.uniform(1 - max_scale, 1 + max_scale))))
    source = np.linspace(0, n - 1, m)
    lo = np.floor(source).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    frac = (source - lo)[:, None].astype(x.dtype)
    return x[lo] * (1 - frac) + x[hi] * frac


@dataclass(frozen=True)
class FrameAugment:
    """The chain used by ``--augment``; every step can be switched off by setting its strength to 0."""

    n_mels: int
    max_warp: float = 0.1
    max_time_scale: float = 0.1
    freq_masks: int = 2
    freq_width: int = 8
    time_masks: int = 2
    time_fraction: float = 0.05

    @classmethod
    def for_features(cls, features: FeatureSet, **overrides) -> "FrameAugment":
        if not isinstance(features, LogMelFrames):
            raise ValueError(f"--augment works on frame features (logmel), not {features.kind}")
        return cls(n_mels=features.n_mels, **overrides)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.max_warp:
            x = warp_frequency(x, rng, n_mels=self.n_mels, max_warp=self.max_warp)
        if self.max_time_scale:
            x = scale_time(x, rng, max_scale=self.max_time_scale)
        if self.freq_masks:
            x = mask_frequency(x, rng, n_mels=self.n_mels, masks=self.freq_masks, max_width=self.freq_width)
        if self.time_masks:
            x = mask_time(x, rng, masks=self.time_masks, max_fraction=self.time_fraction)
        return x
