"""From uploaded bytes to emotion probabilities: decode, features (training's code), one model call.

Decoding and feature extraction run in a thread pool, off the event loop. Model calls go through
:class:`BatchingRunner`: one call at a time on a dedicated thread; requests that arrive while a call runs
are answered together by the next call (as TensorFlow Serving's batching does), which adds no delay when
the service is idle and raises throughput under load. The model is the SavedModel's serving signature,
not Keras ``model.predict``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np

from training.audio import Audio, AudioError, read_audio
from training.export import ExportedModel
from training.features import pad_batch

log = logging.getLogger("app")


class AudioTooLongError(AudioError):
    pass


@dataclass
class Segment:
    start: float
    end: float
    probabilities: np.ndarray


@dataclass
class Prediction:
    probabilities: np.ndarray  # in the model's label order; for long audio, the mean over windows
    audio: Audio
    timeline: list[Segment] | None = None  # when asked for, or when the audio is longer than the span
    windows: int = 1  # how many model inputs the overall answer averages


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


class BatchingRunner:
    """Serialises model calls and batches the requests that queue up behind a running call."""

    def __init__(self, predict, max_batch: int):
        self._predict = predict
        self._max_batch = max_batch
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ser-model")
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self.calls = 0
        self.items = 0

    async def submit(self, features: np.ndarray) -> np.ndarray:
        if self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._loop(), name="ser-batching")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((features, future))
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self._queue.get()]
            while len(items) < self._max_batch and not self._queue.empty():
                items.append(self._queue.get_nowait())
            try:
                batch = pad_batch([f for f, _ in items])
                probs = await loop.run_in_executor(self._executor, self._predict, batch)
            except Exception as exc:  # the model failed: every waiting request gets the error
                for _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.calls += 1
            self.items += len(items)
            for (_, future), p in zip(items, probs):
                if not future.done():
                    future.set_result(p)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._executor.shutdown(wait=False, cancel_futures=True)


class Predictor:
    """The served model and everything a request needs from it."""

    def __init__(self, model: ExportedModel, *, threads: int, max_batch: int, max_audio_seconds: float):
        self.model = model
        self.max_audio_seconds = max_audio_seconds
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="ser-features")
        self._runner = BatchingRunner(model.predict, max_batch)

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
        return float(self.model.serving["span_seconds"])

    def decode(self, data: bytes, filename: str = "upload") -> Audio:
        audio = read_audio(data, name=filename)
        if audio.duration > self.max_audio_seconds:
            raise AudioTooLongError(f"{filename}: {audio.duration:.1f} s of audio; the limit is "
                                    f"{self.max_audio_seconds:g} s (SER_MAX_AUDIO_SECONDS)")
        return audio

    def prepare(self, data: bytes, filename: str = "upload") -> tuple[Audio, np.ndarray]:
        """Decode and compute features of the whole clip: the same calls training makes for a file on disk."""
        audio = self.decode(data, filename)
        return audio, self.model.features.extract(audio)

    def featurize(self, data: bytes, filename: str, *, timeline: bool, window: float, hop: float
                  ) -> tuple[Audio, np.ndarray | None, list[tuple[float, float]], list[np.ndarray]]:
        """Decode; features of the whole clip when it fits the model's span; features of each window when a
        timeline is asked for or the clip is longer than the span."""
        audio = self.decode(data, filename)
        extract = self.model.features.extract
        whole = extract(audio) if audio.duration <= self.span else None
        spans = plan_windows(audio.duration, window, hop) if timeline or whole is None else []
        return audio, whole, spans, [extract(cut(audio, a, b)) for a, b in spans]

    def warm_up(self) -> None:
        """One full pass (features and model) so the first real request is not the slow one."""
        sr = 16000
        t = np.arange(3 * sr) / sr
        y = (0.1 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
        features = self.model.features.extract(Audio(y, sr, 1))
        for batch in (1, 2):
            self.model.predict(pad_batch([features] * batch))

    async def predict(self, data: bytes, filename: str = "upload", *, timeline: bool = False,
                      window: float | None = None, hop: float | None = None) -> Prediction:
        """Probabilities of the whole clip; for audio longer than the model's span, the mean over windows.

        With ``timeline``, also the probabilities of every window (window and hop default to the model's).
        """
        window = window or self.model.serving["window_seconds"]
        hop = hop or self.model.serving["hop_seconds"]
        audio, whole, spans, window_features = await asyncio.get_running_loop().run_in_executor(
            self._pool, partial(self.featurize, data, filename, timeline=timeline, window=window, hop=hop))
        inputs = ([whole] if whole is not None else []) + window_features
        probs = await asyncio.gather(*[self._runner.submit(f) for f in inputs])
        window_probs = probs[1:] if whole is not None else probs
        overall = probs[0] if whole is not None else np.mean(np.stack(window_probs), axis=0)
        segments = [Segment(a, b, p) for (a, b), p in zip(spans, window_probs)] if timeline else None
        return Prediction(overall, audio, segments, 1 if whole is not None else len(window_probs))

    async def aclose(self) -> None:
        await self._runner.aclose()
        self._pool.shutdown(wait=False, cancel_futures=True)
