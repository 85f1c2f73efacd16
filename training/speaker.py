"""Training and evaluating models whose features use a speaker reference (speech_emotion/profiles.py).

Training draws the reference anew for every item and epoch (:class:`ReferenceSampler`): the clip's own mean,
or the mean of 5, 20 or all of the speaker's training clips, so one model answers both ways and with
profiles of any size. Evaluation reports both: each test clip alone, and each test speaker with a profile
from all of their test clips (:func:`with_speaker_profiles`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from speech_emotion.features import FeatureSet
from speech_emotion.profiles import SpeakerProfile, profile_bins

#: Profile sizes training draws from (clips of the same speaker; 1 = the clip alone, None = all of them)
#: and how often each is drawn. Half of the draws are the whole profile, what evaluation with profiles
#: uses; a fifth the clip alone, what /predict without a profile uses. (Experiment on EMO-DB LOSO, seeds 0
#: and 1, UAR with profiles / alone: sizes 1, 3, 5, 10, 20, all drawn alike 0.803, 0.782 / 0.734, 0.718;
#: these weights 0.806, 0.803 / 0.742, 0.715; benchmarks/README.md.)
PROFILE_SIZES: tuple[int | None, ...] = (1, 5, 20, None)
PROFILE_WEIGHTS: tuple[float, ...] = (0.2, 0.15, 0.15, 0.5)


class ReferenceSampler:
    """Training items with a reference drawn per item and epoch, as :data:`PROFILE_SIZES` says.

    ``features`` are :meth:`FeatureSet.base` arrays, ``speakers`` their speakers; a reference only ever
    comes from clips of the item's own speaker among ``features``.
    """

    def __init__(self, features: Sequence[np.ndarray], speakers: Sequence[str], feature_set: FeatureSet,
                 sizes: Sequence[int | None] = PROFILE_SIZES, weights: Sequence[float] = PROFILE_WEIGHTS):
        n = profile_bins(feature_set)
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
