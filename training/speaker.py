"""Speaker profiles: a speaker's mean log-mel spectrum, the reference of ``LogMelFrames(reference="speaker")``.

The published baselines of emotion recognition across speakers normalise each speaker's features with that
speaker's own statistics (no labels needed, only their recordings). A model trained with
``reference="speaker"`` reads frames with a reference spectrum removed from every log-mel bin:

- with a profile (the mean over some of the speaker's clips: :class:`SpeakerProfile`), the speaker's voice
  and microphone colouring go and what is left is how this clip differs from how they usually sound;
- without one, the clip's own mean (one clip is a profile of one clip).

Training draws the reference anew for every item and epoch (:class:`ReferenceSampler`): the clip's own mean,
or the mean of 5, 20 or all of the speaker's training clips, so one model answers both ways and with
profiles of any size. Evaluation reports both: each test clip alone, and each test speaker with a profile
from all of their test clips (:func:`with_speaker_profiles`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from training.features import FeatureSet

#: Profile sizes training draws from (clips of the same speaker; 1 = the clip alone, None = all of them)
#: and how often each is drawn. Half of the draws are the whole profile, what evaluation with profiles
#: uses; a fifth the clip alone, what /predict without a profile uses. (Experiment on EMO-DB LOSO, seeds 0
#: and 1, UAR with profiles / alone: sizes 1, 3, 5, 10, 20, all drawn alike 0.803, 0.782 / 0.734, 0.718;
#: these weights 0.806, 0.803 / 0.742, 0.715; benchmarks/README.md.)
PROFILE_SIZES: tuple[int | None, ...] = (1, 5, 20, None)
PROFILE_WEIGHTS: tuple[float, ...] = (0.2, 0.15, 0.15, 0.5)


def _bins(feature_set: FeatureSet) -> int:
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
        n = _bins(feature_set)
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
        n = _bins(feature_set)
        if not isinstance(data, dict):
            raise ValueError("a profile is a JSON object with 'mean', 'frames', 'clips' and 'features'")
        missing = {"mean", "frames", "clips", "features"} - set(data)
        if missing:
            raise ValueError(f"the profile lacks {', '.join(sorted(missing))}")
        if data["features"] != feature_set.base_fingerprint():
            raise ValueError(f"the profile was made with other feature settings ({data['features']!r}; this model "
                             f"uses {feature_set.base_fingerprint()!r}): make it again with POST /profile")
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


class ReferenceSampler:
    """Training items with a reference drawn per item and epoch, as :data:`PROFILE_SIZES` says.

    ``features`` are :meth:`FeatureSet.base` arrays, ``speakers`` their speakers; a reference only ever
    comes from clips of the item's own speaker among ``features``.
    """

    def __init__(self, features: Sequence[np.ndarray], speakers: Sequence[str], feature_set: FeatureSet,
                 sizes: Sequence[int | None] = PROFILE_SIZES, weights: Sequence[float] = PROFILE_WEIGHTS):
        n = _bins(feature_set)
        if len(sizes) != len(weights):
            raise ValueError("one weight per profile size")
        self.features, self.feature_set, self.sizes = features, feature_set, tuple(sizes)
        self.weights = np.asarray(weights, dtype=float) / np.sum(weights)
        self.sums = np.stack([f[:, :n].sum(axis=0, dtype=np.float64) for f in features])
        self.counts = np.array([f.shape[0] for f in features], dtype=np.float64)
        by_speaker: dict[str, list[int]] = {}
        for i, s in enumerate(speakers):
            by_speaker.setdefault(s, []).append(i)
        self.pool = [np.array(by_speaker[s]) for s in speakers]

    def reference(self, i: int, size: int | None, rng: np.random.Generator) -> np.ndarray:
        pool = self.pool[i]
        if size == 1:
            pick = np.array([i])
        elif size is None or size >= len(pool):
            pick = pool
        else:
            pick = rng.choice(pool, size=size, replace=False)
        return (self.sums[pick].sum(axis=0) / self.counts[pick].sum()).astype(np.float32)

    def __call__(self, i: int, rng: np.random.Generator) -> np.ndarray:
        size = self.sizes[int(rng.choice(len(self.sizes), p=self.weights))]
        return self.feature_set.finish(self.features[i], self.reference(i, size, rng))


def with_speaker_profiles(features: Sequence[np.ndarray], speakers: Sequence[str], feature_set: FeatureSet
                          ) -> list[np.ndarray]:
    """Each clip finished with its speaker's profile over all of ``features`` of that speaker."""
    profiles: dict[str, SpeakerProfile] = {}
    for s in dict.fromkeys(speakers):
        profiles[s] = SpeakerProfile.from_features([f for f, t in zip(features, speakers) if t == s], feature_set)
    return [feature_set.finish(f, profiles[s].mean) for f, s in zip(features, speakers)]


def finish_each(features: Sequence[np.ndarray], feature_set: FeatureSet) -> list[np.ndarray]:
    """Each clip finished alone (its own reference, if the features use one): what /predict does."""
    return [feature_set.finish(f) for f in features]
