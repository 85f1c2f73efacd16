"""From decoded audio to a model's answer, the rule the service and bulk scoring share.

A clip no longer than the model's span is one model input; longer audio (or any audio when a timeline is
asked for) is cut into windows of ``window_seconds`` every ``hop_seconds`` (the model's serving settings),
and the overall answer is the mean over the windows that hold speech. Audio without speech is refused
(NoSpeechError) before any model call. How the inputs reach the model (one call per clip, batched calls
across requests or files) is the caller's: :meth:`Analyser.prepare` returns the inputs, :meth:`Analyser.answer`
turns the model's probabilities for them into the answer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from speech_emotion.audio import Audio, AudioTooShortError
from speech_emotion.audio import resample
from speech_emotion.features import pad_batch
from speech_emotion.model import ExportedModel
from speech_emotion.profiles import SpeakerProfile
from speech_emotion.speech import DEFAULT_DETECTOR, NoSpeechError, SpeechDetector


@dataclass
class Segment:
    start: float
    end: float
    probabilities: np.ndarray | None  # None: no speech in this window


@dataclass
class Detected:
    """What speech detection found in a clip (:meth:`Analyser.detect`)."""

    seconds: float  # speech found
    runs: list[tuple[float, float]]  # the runs of speech, in seconds
    heard: Audio  # the signal the detector read: the clip mono at 16 kHz


@dataclass
class Prepared:
    """A clip's model inputs and what is needed to read the model's answer for them."""

    audio: Audio | None  # None where only the answer is still to come (bulk scoring sends the rest on)
    speech_seconds: float  # speech the detector found in the whole clip
    whole: bool  # inputs[0] is the whole clip
    spans: list[tuple[float, float]]  # the windows (empty when the whole clip is the answer and no timeline)
    speech: list[bool]  # per window: it held speech (and has an input)
    inputs: list[np.ndarray]
    timeline: bool


@dataclass
class Answer:
    probabilities: np.ndarray  # in the model's label order; for long audio, the mean over speech windows
    timeline: list[Segment] | None
    windows: int  # how many model inputs the overall answer averages
    speech_seconds: float


def plan_windows(duration: float, window: float, hop: float) -> list[tuple[float, float]]:
    """Windows of ``window`` seconds every ``hop`` seconds covering ``[0, duration]``; the last one ends at
    the end (so the tail is analysed too); one window when the audio is not longer than ``window``."""
    if duration <= window:
        return [(0.0, duration)]
    starts = list(np.arange(0.0, duration - window + 1e-9, hop))
    if duration - (starts[-1] + window) > 1e-6:
        starts.append(duration - window)
    return [(round(float(s), 4), round(float(s) + window, 4)) for s in starts]


def cut(audio: Audio, start: float, end: float) -> Audio:
    a, b = int(round(start * audio.sample_rate)), int(round(end * audio.sample_rate))
    return Audio(audio.samples[a:b], audio.sample_rate, audio.channels, audio.format, audio.subtype)


class Analyser:
    """A loaded model's way of hearing audio: speech detection, features, windows, the overall answer."""

    def __init__(self, model: ExportedModel):
        self.model = model

    @property
    def labels(self) -> list[str]:
        return self.model.labels

    @property
    def span(self) -> float:
        """The longest clip analysed in one pass."""
        return float(self.model.serving["span_seconds"])

    @property
    def detector(self) -> SpeechDetector:
        """The model's own speech detector; for models trained without one, the default one, used only to
        refuse audio without speech (their features still read every sample, as in their training)."""
        return getattr(self.model.features, "speech", None) or DEFAULT_DETECTOR

    def speech_seconds(self, audio: Audio) -> float:
        """Seconds of speech in ``audio``; raises NoSpeechError when there is too little. Run on the waveform
        the features read (mono, 16 kHz), so it agrees with their speech detection. Audio too short for the
        features at all is refused as such first (AudioTooShortError)."""
        return self.detect(audio).seconds

    def detect(self, audio: Audio) -> Detected:
        """:meth:`speech_seconds`, with the runs of speech found and the signal the detector read (which the
        features take, so that the detector runs, and the clip is resampled, once per clip)."""
        self.model.features.require_length(audio)
        y = resample(np.ascontiguousarray(audio.mono()), audio.sample_rate, 16000)
        detector = self.detector
        runs = detector.runs(y, 16000)
        seconds = float(sum(b - a for a, b in runs))
        if seconds < detector.min_speech:
            raise NoSpeechError(f"no speech found in the audio ({seconds:.2f} s of speech-like sound in "
                                f"{audio.duration:.2f} s; at least {detector.min_speech:g} s needed): silence, "
                                "noise or a click holds no emotion to recognise")
        return Detected(seconds, runs, Audio(y, 16000, 1))

    def clip_features(self, audio: Audio, reference: np.ndarray | None = None,
                      detected: Detected | None = None) -> np.ndarray:
        """The model input of the whole clip: speech detection (unless ``detected``, :meth:`detect`'s answer
        for this clip) and the features."""
        detected = detected or self.detect(audio)
        return self.model.features.extract(self._read(audio, detected), reference, detected.runs)

    def _read(self, audio: Audio, detected: Detected) -> Audio:
        """What the features read of ``audio``: the detector's mono 16 kHz copy where that is the signal they
        read anyway (the same numbers, without mixing down and resampling the clip a second time)."""
        return detected.heard if self.model.features.reads_mono_16k else audio

    def prepare(self, audio: Audio, *, timeline: bool = False, window: float | None = None,
                hop: float | None = None, profile: SpeakerProfile | None = None) -> Prepared:
        """Refuse audio without speech; features of the whole clip when it fits the model's span; features of
        each window when a timeline is asked for or the clip is longer than the span (a window without speech
        gets none). With a speaker profile, every input is finished with its mean (else, for models with a
        speaker reference, each input with its own)."""
        window = window or self.model.serving["window_seconds"]
        hop = hop or self.model.serving["hop_seconds"]
        detected = self.detect(audio)
        reference = None if profile is None else profile.mean
        gate = getattr(self.model.features, "speech", None) is None  # features that do not detect speech

        def extract(part: Audio) -> np.ndarray | None:
            try:
                if gate:
                    self.speech_seconds(part)
                return self.model.features.extract(part, reference)
            except (NoSpeechError, AudioTooShortError):  # a window without (enough) speech
                return None

        whole = self.clip_features(audio, reference, detected) if audio.duration <= self.span else None
        spans = plan_windows(audio.duration, window, hop) if timeline or whole is None else []
        # Windows are cut from what the features read (the detector's 16 kHz copy, where that is it): a long
        # 48 kHz recording is resampled once, not once per window (twice over, as windows overlap).
        heard = self._read(audio, detected)
        windows = [extract(cut(heard, a, b)) for a, b in spans]
        if whole is None and not any(w is not None for w in windows):
            raise NoSpeechError(f"no speech found in any {window:g} s window of the audio")
        inputs = ([whole] if whole is not None else []) + [w for w in windows if w is not None]
        return Prepared(audio, detected.seconds, whole is not None, spans, [w is not None for w in windows], inputs,
                        timeline)

    @staticmethod
    def answer(prepared: Prepared, probabilities: list[np.ndarray]) -> Answer:
        """The answer from the model's probabilities for ``prepared.inputs`` (one row each, in order)."""
        rest = iter(probabilities[1:] if prepared.whole else probabilities)
        per_window = [next(rest) if s else None for s in prepared.speech]
        heard = [p for p in per_window if p is not None]
        overall = probabilities[0] if prepared.whole else np.mean(np.stack(heard), axis=0)
        segments = ([Segment(a, b, p) for (a, b), p in zip(prepared.spans, per_window)]
                    if prepared.timeline else None)
        return Answer(overall, segments, 1 if prepared.whole else len(heard), round(prepared.speech_seconds, 2))

    def profile(self, audios: list[tuple[Audio, str]]) -> SpeakerProfile:
        """A speaker profile from some of their clips (no model call); a clip that cannot be used raises,
        naming the clip."""
        features = self.model.features
        bases = []
        for audio, name in audios:
            try:
                detected = self.detect(audio)
                # speech only, for models with a speech detector
                bases.append(features.base(self._read(audio, detected), detected.runs))
            except AudioTooShortError as exc:  # its message does not name the clip
                raise AudioTooShortError(f"'{name}' is {exc}") from None
            except NoSpeechError as exc:
                raise NoSpeechError(f"'{name}': {exc}") from None
        return SpeakerProfile.from_features(bases, features)

    def warm_up(self) -> None:
        """One full pass (features and model) so the first real clip is not the slow one."""
        sr = 16000
        t = np.arange(3 * sr) / sr
        y = (0.1 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
        try:
            self.speech_seconds(Audio(y, sr, 1))
        except NoSpeechError:  # a tone need not pass for speech: the detector has run once all the same
            pass
        features = self.model.features
        if getattr(features, "speech", None) is not None:
            features = dataclasses.replace(features, speech=None)
        features = features.extract(Audio(y, sr, 1))
        for batch in (1, 2):
            self.model.predict(pad_batch([features] * batch))
