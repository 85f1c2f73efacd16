"""Degraded copies of training clips: the training corpus heard through other rooms, microphones and lines.

Each training clip gets ``copies`` versions made by :func:`training.degrade.random_degradation` (silence
and noise around it, additive noise or babble, reverberation, telephone band, a lossy codec, gain and
microphone colouring) and passed through the same feature code as any upload (speech detection
included). During training every item is drawn each epoch as itself or as one of its copies
(:class:`CopySampler`), so the model learns what stays the same when the recording changes.

Babble is made only from clips of *other* speakers among the clips being trained on: in a
leave-one-speaker-out fold the test speaker's voice never reaches training, not even as background.
Copies without babble do not depend on the fold and are computed once per run (:class:`DegradedCopies`
keeps them); copies with babble are made per fold from that fold's training speakers.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import zlib
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from speech_emotion.audio import Audio, AudioError, read_audio
from training.degrade import CONDITIONS, DegradeSettings, random_degradation
from speech_emotion.audio import resample
from speech_emotion.features import FeatureSet
from training.corpora.manifest import Corpus

log = logging.getLogger(__name__)

#: Rate the copies are made at (the rate of the frame features).
RATE = 16000
#: Babble talkers are drawn from this many clips of other speakers per copy.
BABBLE_POOL = 6


class Waveforms:
    """Mono ``RATE`` waveforms of ``paths``, decoded once when first asked for."""

    def __init__(self, paths: Sequence[str]):
        self.paths = list(paths)
        self._waves: dict[int, np.ndarray] = {}

    def __getitem__(self, i: int) -> np.ndarray:
        if i not in self._waves:
            audio = read_audio(self.paths[i])
            self._waves[i] = resample(np.ascontiguousarray(audio.mono()), audio.sample_rate, RATE)
        return self._waves[i]


def _features(feature_set: FeatureSet, y: np.ndarray, what: str) -> np.ndarray | None:
    """Base features of a degraded waveform; None when nothing is left to analyse (no speech)."""
    try:
        return feature_set.base(Audio(y.astype(np.float32), RATE, 1))
    except AudioError as exc:
        log.debug("%s: %s", what, exc)
        return None


def file_seed(path: str) -> int:
    """A clip's part of the seeds of its degradations: its file name, so every checkout draws the same ones."""
    return zlib.crc32(Path(path).name.encode())


def degrade_for_suite(i: int, condition: str, waves: Waveforms, speakers: Sequence[str]) -> np.ndarray:
    """Clip ``i`` under the fixed ``condition``, seeded by its file name and the condition's name (the same file
    is degraded the same way in every run, wherever the corpus lies); babble from clips of other speakers among ``waves``."""
    rng = np.random.default_rng([file_seed(waves.paths[i]), zlib.crc32(condition.encode())])
    others = [k for k in range(len(waves.paths)) if speakers[k] != speakers[i]]
    pool = rng.choice(others, size=min(BABBLE_POOL, len(others)), replace=False) if others else []
    return CONDITIONS[condition](waves[i], RATE, rng, [waves[int(k)] for k in pool])


def condition_inputs(idx: Sequence[int], condition: str, waves: Waveforms, speakers: Sequence[str],
                     feature_set: FeatureSet) -> list[np.ndarray | None]:
    """The model inputs (each clip alone) of clips ``idx`` under the fixed degradation ``condition`` of
    :data:`training.degrade.CONDITIONS`, seeded by the clip's file name and the condition's name, so the same file
    is degraded the same way in every run; babble comes from clips of other speakers among all of ``waves``.
    None for a clip in which no speech is left (the service would answer no_speech)."""
    out = []
    for i in idx:
        y = degrade_for_suite(i, condition, waves, speakers)
        x = _features(feature_set, y, f"{waves.paths[i]} under {condition}")
        out.append(None if x is None else feature_set.finish(x))
    return out


def write_conditions(corpus: Corpus, out_dir: str, conditions: Sequence[str]) -> list[str]:
    """Write every clip of ``corpus`` under every condition as 16 kHz WAV, exactly as the robustness suite hears
    them (same seeds); returns the files written.

    Each clip keeps its path below the folder that holds all of them, its suffix made ``.wav``:
    ``out_dir/<condition>/OAF_neutral/OA_bite_neutral.wav``. Corpora whose labels or speakers are read from
    folder names (TESS, one folder per emotion) keep them, and two clips of the same name in different
    folders stay two files. Each condition's folder also gets the corpus's manifest for its copies
    (``manifest.csv``, :meth:`Corpus.write_csv`, paths relative to it), which ``--data`` reads whatever the
    corpus's layout.
    """
    import os
    from collections import Counter

    import soundfile as sf

    utterances = corpus.utterances
    if not utterances:
        return []
    paths = [u.path for u in utterances]
    speakers = [u.speaker for u in utterances]
    # absolute, not resolved: a corpus of symbolic links keeps the layout of its links, not of their targets
    absolute = [Path(os.path.abspath(p)) for p in paths]
    top = Path(os.path.commonpath([str(p.parent) for p in absolute]))
    names = [p.relative_to(top).with_suffix(".wav") for p in absolute]
    # clip.flac beside clip.mp3 would both become clip.wav: those keep their own suffix (clip.flac.wav)
    taken = Counter(names)
    names = [n if taken[n] == 1 else n.with_name(p.name + ".wav") for n, p in zip(names, absolute)]
    waves = Waveforms(paths)
    written = []
    for name in conditions:
        folder = Path(out_dir) / name
        copies = []
        for i, utterance in enumerate(utterances):
            y = degrade_for_suite(i, name, waves, speakers)
            target = folder / names[i]
            target.parent.mkdir(parents=True, exist_ok=True)
            sf.write(target, y, RATE, subtype="PCM_16")
            written.append(str(target))
            copies.append(dataclasses.replace(utterance, path=names[i].as_posix(), duration=len(y) / RATE,
                                              sample_rate=RATE, channels=1))
        dataclasses.replace(corpus, utterances=copies, skipped=[], excluded=[]).write_csv(folder / "manifest.csv")
    return written


@dataclass
class DegradedCopies:
    """Makes and keeps the copies of one run's clips (``waves.paths[i]`` spoken by ``speakers[i]``)."""

    waves: Waveforms
    speakers: Sequence[str]
    feature_set: FeatureSet
    copies: int
    seed: int
    settings: DegradeSettings = field(default_factory=DegradeSettings)
    _plain: dict[tuple[int, int], np.ndarray | None] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def paths(self) -> list[str]:
        return self.waves.paths

    def wave(self, i: int) -> np.ndarray:
        return self.waves[i]

    def _rng(self, i: int, j: int) -> np.random.Generator:
        # Seeded by the clip's file name, not its index: the same copies in every fold, wherever the corpus lies.
        return np.random.default_rng([self.seed, file_seed(self.paths[i]), j])

    def _features(self, y: np.ndarray, i: int) -> np.ndarray | None:
        # degraded past recognition (no speech left): the item keeps its other copies
        return _features(self.feature_set, y, f"copy of {self.paths[i]}")

    def for_items(self, idx: Sequence[int], draw: int = 0) -> list[list[np.ndarray]]:
        """The copies of every clip ``idx`` (indices into ``paths``); babble only from other speakers in ``idx``.
        ``draw``: which set of ``copies`` copies (each set drawn anew, with the same settings; set 0 is the run's
        own), e.g. one per member of an ensemble whose members are fitted apart."""
        start = time.perf_counter()
        idx = list(idx)
        by_speaker: dict[str, list[int]] = {}
        for i in idx:
            by_speaker.setdefault(self.speakers[i], []).append(i)
        out = []
        for i in idx:
            items = []
            for j in range(draw * self.copies, (draw + 1) * self.copies):
                rng = self._rng(i, j)
                babble = rng.random() < self.settings.babble_p
                if babble:
                    others = [k for s, ks in by_speaker.items() if s != self.speakers[i] for k in ks]
                    if not others:
                        babble = False
                if not babble:
                    if (i, j) not in self._plain:
                        y = random_degradation(self.wave(i), RATE, rng, others=(),
                                               settings=_without_babble(self.settings))
                        self._plain[(i, j)] = self._features(y, i)
                    x = self._plain[(i, j)]
                else:
                    pool = rng.choice(others, size=min(BABBLE_POOL, len(others)), replace=False)
                    y = random_degradation(self.wave(i), RATE, rng, others=[self.wave(k) for k in pool],
                                           settings=_babble_only(self.settings))
                    x = self._features(y, i)
                if x is not None:
                    items.append(x)
            out.append(items)
        self.seconds += time.perf_counter() - start
        return out


def _without_babble(settings: DegradeSettings) -> DegradeSettings:
    return dataclasses.replace(settings, babble_p=0.0)


def _babble_only(settings: DegradeSettings) -> DegradeSettings:
    """The copy was drawn to hold babble: babble for sure, and no other additive noise."""
    return dataclasses.replace(settings, babble_p=1.0, noise_p=0.0)


class CopySampler:
    """Training inputs drawn per item and epoch: the clip itself (through ``base``, e.g. a speaker-reference
    sampler, or as it is) with probability ``clean``, else one of its degraded copies finished alone (its own
    reference: a degraded copy has no profile of its own recording conditions)."""

    def __init__(self, features: Sequence[np.ndarray], copies: Sequence[Sequence[np.ndarray]],
                 feature_set: FeatureSet, base: Callable[[int, np.ndarray], np.ndarray] | None = None,
                 clean: float = 0.5):
        self.features, self.copies, self.feature_set, self.base, self.clean = features, copies, feature_set, base, clean

    def __call__(self, i: int, rng: np.random.Generator) -> np.ndarray:
        if self.copies[i] and rng.random() >= self.clean:
            return self._copy(i, rng)
        return self._clean(i, rng)

    def pair(self, i: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Two views of item ``i``: the clip itself and one of its copies (the clip again when no copy kept
        any speech), for a loss that asks both for the same answer."""
        clean = self._clean(i, rng)
        return clean, (self._copy(i, rng) if self.copies[i] else clean)

    def _copy(self, i: int, rng: np.random.Generator) -> np.ndarray:
        return self.feature_set.finish(self.copies[i][int(rng.integers(len(self.copies[i])))])

    def _clean(self, i: int, rng: np.random.Generator) -> np.ndarray:
        if self.base is not None:
            return self.base(i, rng)
        return self.feature_set.finish(self.features[i])
