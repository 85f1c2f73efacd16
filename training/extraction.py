"""Feature extraction over a whole corpus: on all cores (or as Ray tasks on a cluster), with a progress bar,
cached on disk.

The cache key is the SHA-256 of the file's bytes plus the feature set's base fingerprint (the settings
that change :meth:`FeatureSet.base`, the feature code version and librosa's version), so renaming or
moving a file keeps its cache entry, editing the audio or any such setting does not, and a second run over
the same corpus computes nothing. The cache holds base features; training finishes them (a speaker
reference, for feature sets that use one).
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from speech_emotion.audio import AudioError, read_audio
from training.corpora.manifest import Skipped
from speech_emotion.features import FeatureSet
from speech_emotion.runtime import retain_freed_memory

log = logging.getLogger(__name__)

#: Below this many files to compute, a process pool costs more than it saves.
_POOL_MIN_FILES = 16
#: Files per Ray task: enough work to outweigh a task's scheduling, small enough to spread a corpus evenly.
_RAY_CHUNK = 32


def file_digest(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class FeatureCache:
    """``<root>/<feature fingerprint>/<sha[:2]>/<sha>.npy``; ``root=None`` disables caching."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root is not None else None
        self._write_failed = False

    def _path(self, digest: str, settings: FeatureSet) -> Path:
        assert self.root is not None
        return self.root / settings.base_fingerprint() / digest[:2] / f"{digest}.npy"

    def get(self, digest: str, settings: FeatureSet) -> np.ndarray | None:
        if self.root is None:
            return None
        path = self._path(digest, settings)
        try:
            return np.load(path, allow_pickle=False)
        except (FileNotFoundError, ValueError, OSError):
            return None  # missing, or a torn write from an interrupted run: recompute

    def put(self, digest: str, settings: FeatureSet, features: np.ndarray) -> None:
        if self.root is None:
            return
        path = self._path(digest, settings)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                np.save(f, features, allow_pickle=False)
            os.replace(tmp, path)  # atomic: readers never see half a file
        except OSError as exc:  # read-only or foreign-owned cache, full disk: go on without caching
            if not self._write_failed:
                log.warning("feature cache %s not writable (%s); continuing without caching", self.root, exc)
                self._write_failed = True


@dataclass
class Extracted:
    """Features in input order (None where the file failed), what failed and why, and what it cost."""

    features: list[np.ndarray | None]
    failed: list[Skipped] = field(default_factory=list)
    computed: int = 0
    cached: int = 0
    seconds: float = 0.0


def extract_one(path: str, settings: FeatureSet) -> np.ndarray:
    """Decode one file and compute its features: the same call the service makes on an upload."""
    return settings.base(read_audio(path))


def _worker(path: str, settings: FeatureSet) -> tuple[np.ndarray | None, str | None]:
    try:
        return extract_one(path, settings), None
    except AudioError as exc:
        return None, str(exc).removeprefix(f"{path}: ")


def _init_worker() -> None:
    # One process per core already; BLAS threads inside each would only fight over the same cores.
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    retain_freed_memory()


def extract_features(
    paths: list[str],
    settings: FeatureSet,
    *,
    cache: FeatureCache | None = None,
    jobs: int | None = None,
    progress: bool = True,
    ray_address: str | None = None,
) -> Extracted:
    """Features of every file in ``paths``; files that cannot be decoded or analysed are reported, not fatal.

    ``ray_address``: compute them as Ray tasks on that cluster ("local": a Ray instance started on this
    machine), the same function as here, :data:`_RAY_CHUNK` files a task; the paths must be readable on the
    cluster's nodes. This process reads and writes the cache either way, so it is the same cache."""
    cache = cache or FeatureCache(None)
    retain_freed_memory()  # for the files extracted in this process (see speech_emotion/runtime.py)
    start = time.perf_counter()
    result = Extracted(features=[None] * len(paths))
    digests = [file_digest(p) for p in paths] if cache.root is not None else [""] * len(paths)
    todo: list[int] = []
    for i, digest in enumerate(digests):
        hit = cache.get(digest, settings) if digest else None
        if hit is None:
            todo.append(i)
        else:
            result.features[i] = hit
    result.cached = len(paths) - len(todo)

    def done(i: int, features: np.ndarray | None, error: str | None) -> None:
        if error is not None:
            result.failed.append(Skipped(paths[i], error))
            log.warning("skipped %s: %s", paths[i], error)
            return
        result.features[i] = features
        result.computed += 1
        if digests[i]:
            cache.put(digests[i], settings, features)

    jobs = max(1, jobs or os.cpu_count() or 1)
    bar = _progress(len(todo), settings.kind, enabled=progress and bool(todo))
    if ray_address and todo:
        for i, (features, error) in _on_ray([paths[i] for i in todo], todo, settings, ray_address):
            done(i, features, error)
            bar.update()
    elif jobs == 1 or len(todo) < _POOL_MIN_FILES:
        for i in todo:
            done(i, *_worker(paths[i], settings))
            bar.update()
    else:
        # spawn, not fork: the parent may already hold TensorFlow's threads, which fork does not survive.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=ctx,
                                 initializer=_init_worker) as pool:
            futures = {pool.submit(_worker, paths[i], settings): i for i in todo}
            for future in as_completed(futures):
                done(futures[future], *future.result())
                bar.update()
    bar.close()
    result.failed.sort(key=lambda s: s.path)
    result.seconds = time.perf_counter() - start
    return result


def _on_ray(paths: list[str], index: list[int], settings: FeatureSet, address: str):
    """``(index, (features, error))`` for every path, as Ray tasks finish; a bounded number in flight."""
    from speech_emotion.score import ONE_THREAD, ray_init

    started = ray_init(address)
    import ray

    try:
        task = ray.remote(num_cpus=1, runtime_env={"env_vars": ONE_THREAD})(_ray_chunk)
        chunks = iter([(index[k:k + _RAY_CHUNK], paths[k:k + _RAY_CHUNK]) for k in range(0, len(paths), _RAY_CHUNK)])
        width = max(1, int(ray.cluster_resources().get("CPU", 1)))
        running = {}
        for _ in range(2 * width):
            _submit(task, chunks, settings, running)
        while running:
            (ref,), _ = ray.wait(list(running), num_returns=1)
            yield from zip(running.pop(ref), ray.get(ref))
            _submit(task, chunks, settings, running)
    finally:
        if started:
            ray.shutdown()


def _submit(task, chunks, settings: FeatureSet, running: dict) -> None:
    chunk = next(chunks, None)
    if chunk is not None:
        running[task.remote(chunk[1], settings)] = chunk[0]


def _ray_chunk(paths: list[str], settings: FeatureSet) -> list[tuple[np.ndarray | None, str | None]]:
    return [_worker(path, settings) for path in paths]


def _progress(total: int, what: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=f"features ({what})", unit="file", dynamic_ncols=True, disable=not enabled)
