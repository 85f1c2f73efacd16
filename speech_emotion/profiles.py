"""Speaker profiles: a speaker's mean log-mel spectrum, the reference of ``LogMelFrames(reference="speaker")``.

The published baselines of emotion recognition across speakers normalise each speaker's features with that
speaker's own statistics (no labels needed, only their recordings). A model trained with
``reference="speaker"`` reads frames with a reference spectrum removed from every log-mel bin:

- with a profile (the mean over some of the speaker's clips: :class:`SpeakerProfile`), the speaker's voice
  and microphone colouring go and what is left is how this clip differs from how they usually sound;
- without one, the clip's own mean (one clip is a profile of one clip).

How training draws references for such a model is in training/speaker.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from speech_emotion.features import FeatureSet


def profile_bins(feature_set: FeatureSet) -> int:
    n = getattr(feature_set, "n_mels", None)
    if not feature_set.uses_reference or n is None:
        raise ValueError(f"{feature_set.kind} features do not use a speaker reference")
    return int(n)


@dataclass(frozen=True)
class SpeakerProfile:
    """The mean log-mel spectrum of a speaker over ``clips`` clips (``frames`` frames in all)."""

    mean: np.ndarray  # (n_mels,) float32
    frames: int
    clips: int
    features: str  # base_fingerprint() of the feature settings it was computed with

    @classmethod
    def from_features(cls, bases: Sequence[np.ndarray], feature_set: FeatureSet) -> "SpeakerProfile":
        """From the :meth:`FeatureSet.base` arrays of some of the speaker's clips (at least one)."""
        n = profile_bins(feature_set)
        if not bases:
            raise ValueError("a speaker profile needs at least one clip")
        sums = np.sum([b[:, :n].sum(axis=0, dtype=np.float64) for b in bases], axis=0)
        frames = int(sum(b.shape[0] for b in bases))
        return cls((sums / frames).astype(np.float32), frames, len(bases), feature_set.base_fingerprint())

    def to_dict(self) -> dict[str, Any]:
        return {"mean": [round(float(v), 6) for v in self.mean], "frames": self.frames, "clips": self.clips,
                "features": self.features}

    @classmethod
    def from_dict(cls, data: Any, feature_set: FeatureSet) -> "SpeakerProfile":
        """Validate a profile sent back by a client against the features of the model that will use it;
        ValueError says what is wrong."""
        n = profile_bins(feature_set)
        if not isinstance(data, dict):
            raise ValueError("a profile is a JSON object with 'mean', 'frames', 'clips' and 'features'")
        missing = {"mean", "frames", "clips", "features"} - set(data)
        if missing:
            raise ValueError(f"the profile lacks {', '.join(sorted(missing))}")
        if data["features"] != feature_set.base_fingerprint():
            raise ValueError(f"the profile was made with other feature settings ({data['features']!r}; this model "
                             f"uses {feature_set.base_fingerprint()!r}): make it again with this model")
        mean = data["mean"]
        if not isinstance(mean, list) or len(mean) != n or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in mean):
            raise ValueError(f"the profile's 'mean' must be a list of {n} numbers")
        mean = np.asarray(mean, dtype=np.float32)
        if not np.all(np.isfinite(mean)):
            raise ValueError("the profile's 'mean' holds a value that is not a finite number")
        frames, clips = data["frames"], data["clips"]
        if not (isinstance(frames, int) and isinstance(clips, int) and frames >= 1 and clips >= 1):
            raise ValueError("the profile's 'frames' and 'clips' must be positive integers")
        return cls(mean, frames, clips, data["features"])
