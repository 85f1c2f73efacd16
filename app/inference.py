"""From uploaded bytes to emotion probabilities: decode, then the core's Analyser (speech detection, features,
windows: the same code as training and bulk scoring), with model calls batched across requests.

Everything but HTTP runs off the event loop, on the worker threads of :class:`BatchingPipeline`: a
worker decodes a request and computes its features, and model calls answer every request prepared while
the previous call ran (as TensorFlow Serving's batching does), which adds no delay when the service is
idle and raises throughput under load. The model is the SavedModel's serving signature, not Keras
``model.predict``.

Why one kind of thread does both: with a feature thread pool handing features to a separate model thread
through the event loop, each request crossed threads four times, and the threads' hand-offs of the GIL
cost as much CPU as the features (perf: a fifth of the service's time in futex calls). Here a request
crosses twice (event loop -> worker -> event loop), which measurably lowers the CPU time per request under
load (benchmarks/README.md has the runs).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np

from app.metrics import BATCH_SIZE
from speech_emotion.audio import Audio, AudioError, AudioTooShortError, read_audio
from speech_emotion.features import pad_batch
from speech_emotion.model import ExportedModel
from speech_emotion.predict import Analyser, Segment
from speech_emotion.profiles import SpeakerProfile
from speech_emotion.speech import NoSpeechError, SpeechDetector

log = logging.getLogger("app")


class AudioTooLongError(AudioError):
    pass


@dataclass
class Prediction:
    probabilities: np.ndarray  # in the model's label order; for long audio, the mean over speech windows
    audio: Audio
    timeline: list[Segment] | None = None  # when asked for, or when the audio is longer than the span
    windows: int = 1  # how many model inputs the overall answer averages
    speech_seconds: float = 0.0  # speech the detector found in the whole upload
    batch: int = 1  # model inputs in the call that answered it (this request's and others')


class Answer(NamedTuple):
    context: Any  # what the job's prepare function returned beside its inputs
    probabilities: list[np.ndarray]  # one per input
    batch: int  # model inputs in the call that answered it


class BatchingPipeline:
    """Worker threads that prepare requests (decode + features) and answer them with batched model calls.

    A request is one job: a function, run on a worker thread, that returns a context and the request's model
    inputs. A free worker takes the next job and prepares it. Prepared inputs wait in a ready list; a worker
    that finds no model call running, and no job waiting to be prepared (or a full batch ready), makes one
    call for everything ready (up to ``max_batch`` inputs, padded together) and answers those requests,
    then calls again while inputs are ready. So requests that arrive while a call runs are answered together
    by the next one (as TensorFlow Serving's batching does), an idle service adds no delay, and under load a
    request crosses threads twice (event loop -> worker -> event loop) whatever its batch.
    """

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], *, threads: int, max_batch: int,
                 name: str = "ser-worker"):
        self._predict = predict
        self._max_batch = max_batch
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._ready: list[tuple[_Job, Any, list[np.ndarray]]] = []
        self._ready_inputs = 0
        self._calling = False
        self.calls = 0  # model calls made
        self.items = 0  # model inputs answered
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(threads)]
        for thread in self._threads:
            thread.start()

    async def submit(self, prepare: Callable[[], tuple[Any, list[np.ndarray]]]) -> Answer:
        """Run ``prepare`` on a worker, then the model on the inputs it returns. An exception raised by
        ``prepare`` or by the model call is raised here. Cancelling the wait (client gone, request timed
        out) before a worker takes the job skips its work."""
        loop = asyncio.get_running_loop()
        job = _Job(prepare, loop.create_future(), loop)
        self._jobs.put(job)
        return await job.future

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if job.future.cancelled():  # nobody waits for it: under overload, do not spend a worker on it
                continue
            try:
                prepared = (job, *job.prepare())
            except BaseException as exc:  # reported to the request that sent it
                _answer([(job, None, exc)])
                prepared = None
            with self._lock:
                if prepared is not None:
                    self._ready.append(prepared)
                    self._ready_inputs += len(prepared[2])
                if self._calling or not self._ready or (
                        self._ready_inputs < self._max_batch and not self._jobs.empty()):
                    continue  # the running call takes these next, or more are waiting to be prepared first
                self._calling = True
            self._call_ready()

    def _call_ready(self) -> None:
        while True:
            with self._lock:
                if not self._ready:
                    self._calling = False
                    return
                take, count = 0, 0
                while take < len(self._ready) and (take == 0 or count + len(self._ready[take][2]) <= self._max_batch):
                    count += len(self._ready[take][2])
                    take += 1
                batch, self._ready = self._ready[:take], self._ready[take:]
                self._ready_inputs -= count
            inputs = [x for _, _, xs in batch for x in xs]
            chunks = [inputs[i:i + self._max_batch] for i in range(0, len(inputs), self._max_batch)]
            try:
                probs = np.concatenate([self._predict(pad_batch(chunk)) for chunk in chunks])
            except BaseException as exc:  # the model failed: every request in the call gets the error
                _answer([(job, None, exc) for job, _, _ in batch])
                continue
            self.calls += 1
            self.items += len(inputs)
            for chunk in chunks:
                BATCH_SIZE.observe(len(chunk))
            answers, start = [], 0
            for job, context, xs in batch:
                answers.append((job, Answer(context, list(probs[start:start + len(xs)]), len(chunks[0])), None))
                start += len(xs)
            _answer(answers)

    def close(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)


@dataclass
class _Job:
    prepare: Callable[[], tuple[Any, list[np.ndarray]]]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


def _answer(answers: list[tuple[_Job, Any, BaseException | None]]) -> None:
    """Hand results to the event loops that wait for them: one wake-up per loop, however many answers."""
    by_loop: dict[asyncio.AbstractEventLoop, list] = {}
    for answer in answers:
        by_loop.setdefault(answer[0].loop, []).append(answer)
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, items)
        except RuntimeError:  # that loop is closed: nobody waits any more
            pass


def _resolve(answers) -> None:
    for job, value, exc in answers:
        if job.future.done():  # the request was cancelled (client gone)
            continue
        if exc is not None:
            job.future.set_exception(exc)
        else:
            job.future.set_result(value)


class Predictor:
    """The served model and everything a request needs from it: the core's :class:`Analyser` (speech
    detection, features, windows, the answer) behind the upload limits and the batching pipeline."""

    def __init__(self, model: ExportedModel, *, threads: int, max_batch: int, max_audio_seconds: float):
        self.model = model
        self.analyser = Analyser(model)
        self.max_audio_seconds = max_audio_seconds
        self._pipeline = BatchingPipeline(model.predict, threads=threads, max_batch=max_batch)

    @classmethod
    def load(cls, path, **kwargs) -> "Predictor":
        start = time.perf_counter()
        predictor = cls(ExportedModel.load(path), **kwargs)
        predictor.warm_up()
        log.info("model %s version %s loaded from %s and warmed up in %.1f s", predictor.model.name,
                 predictor.model.version, predictor.model.path, time.perf_counter() - start)
        return predictor

    @property
    def labels(self) -> list[str]:
        return self.model.labels

    @property
    def span(self) -> float:
        return self.analyser.span

    @property
    def detector(self) -> SpeechDetector:
        return self.analyser.detector

    def decode(self, data: bytes, filename: str = "upload") -> Audio:
        audio = read_audio(data, name=filename)
        if audio.duration > self.max_audio_seconds:
            raise AudioTooLongError(f"{filename}: {audio.duration:.1f} s of audio; the limit is "
                                    f"{self.max_audio_seconds:g} s (SER_MAX_AUDIO_SECONDS)")
        return audio

    def speech_seconds(self, audio: Audio) -> float:
        return self.analyser.speech_seconds(audio)

    def prepare(self, data: bytes, filename: str = "upload") -> tuple[Audio, np.ndarray]:
        """What a request for a clip costs before the model call: decode, speech detection, features of the
        whole clip (the same feature code training runs for a file on disk)."""
        audio = self.decode(data, filename)
        return audio, self.analyser.clip_features(audio)

    @property
    def frame_seconds(self) -> float:
        """Seconds of audio per feature frame (for reporting how much audio a profile holds)."""
        features = self.model.features
        return features.hop_length / features.sample_rate if self.uses_profiles else float("nan")

    @property
    def uses_profiles(self) -> bool:
        return bool(self.model.features.uses_reference)

    def parse_profile(self, data: Any) -> SpeakerProfile:
        """A profile a client sent back, checked against this model's features (ValueError says why not)."""
        return SpeakerProfile.from_dict(data, self.model.features)

    async def profile(self, clips: list[tuple[bytes, str]]) -> SpeakerProfile:
        """A speaker profile from some of their clips: decoded and analysed on a worker thread (no model call).
        A clip that cannot be used raises, naming the clip."""

        def compute() -> SpeakerProfile:
            audios = []
            for data, name in clips:
                try:
                    audios.append((self.decode(data, name), name))
                except AudioTooShortError as exc:  # its message does not name the clip
                    raise AudioTooShortError(f"'{name}' is {exc}") from None
            return self.analyser.profile(audios)

        return await asyncio.to_thread(compute)

    def warm_up(self) -> None:
        self.analyser.warm_up()

    async def predict(self, data: bytes, filename: str = "upload", *, timeline: bool = False,
                      window: float | None = None, hop: float | None = None,
                      profile: SpeakerProfile | None = None) -> Prediction:
        """Probabilities of the whole clip; for audio longer than the model's span, the mean over windows.

        With ``timeline``, also the probabilities of every window (window and hop default to the model's).
        With ``profile`` (models with a speaker reference only), the speaker's profile is the reference.
        """

        def prepare():
            try:
                prepared = self.analyser.prepare(self.decode(data, filename), timeline=timeline, window=window,
                                                 hop=hop, profile=profile)
            except NoSpeechError as exc:  # the messages name the upload, as the decoding errors do
                raise NoSpeechError(f"'{filename}': {exc}") from None
            except AudioTooShortError as exc:
                raise AudioTooShortError(f"'{filename}' is {exc}") from None
            return prepared, prepared.inputs

        prepared, probs, batch = await self._pipeline.submit(prepare)
        answer = self.analyser.answer(prepared, probs)
        return Prediction(answer.probabilities, prepared.audio, answer.timeline, answer.windows,
                          answer.speech_seconds, batch)

    async def aclose(self) -> None:
        self._pipeline.close()
