"""Bulk scoring: an archive of recordings in, one row per recording out, as ``POST /predict`` would answer.

    python -m speech_emotion score recordings/ --output scores.csv            # all local cores
    python -m speech_emotion score 'calls/**/*.wav' --output scores.parquet --timeline
    python -m speech_emotion score list.csv --output scores.csv --ray-address auto   # a Ray cluster

The same decoding, speech detection, features, windows and SavedModel as the service
(:class:`speech_emotion.predict.Analyser`); no upload size or length limit. Files are scored in chunks, each
chunk's inputs in batched model calls. On local cores, worker processes (one per core) decode the chunks and
compute their features, and one more process, the only one that imports TensorFlow and loads the model,
makes the model calls: importing TensorFlow is most of a worker's start-up, and a batched model call takes a
fraction of a clip's feature time. On Ray, tasks prepare the chunks and actors holding the model answer them
(:func:`run_ray`). Each finished chunk is appended to ``<output>.partial.jsonl``; an interrupted run started
again with the same output skips the files already done, and the output is written, in input order, once
every file is.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import glob
import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from speech_emotion.audio import AUDIO_EXTENSIONS, AudioError, read_audio

PARTIAL_SUFFIX = ".partial.jsonl"


class ScoreError(ValueError):
    """The input or output cannot be used (the message says why); nothing was scored."""


# ------------------------------------------------------------------------------------------------ inputs


def find_recordings(inputs: Iterable[str]) -> list[str]:
    """Recordings named by ``inputs``: a folder (its audio files, recursively), a glob, a CSV with a ``path``
    column (relative paths are relative to the CSV's folder), or an audio file. Sorted within each input,
    duplicates dropped; a missing input or one that names no recording raises ScoreError."""
    found: dict[str, None] = {}
    for spec in inputs:
        path = Path(spec)
        if path.is_dir():
            names = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        elif path.suffix.lower() == ".csv" and path.is_file():
            names = _from_csv(path)
        elif path.is_file():
            names = [str(path)]
        elif glob.has_magic(spec):
            names = sorted(p for p in glob.glob(spec, recursive=True)
                           if Path(p).is_file() and Path(p).suffix.lower() in AUDIO_EXTENSIONS)
        else:
            raise ScoreError(f"{spec}: no such file or folder")
        if not names:
            raise ScoreError(f"{spec}: no recordings ({', '.join(AUDIO_EXTENSIONS)})")
        found.update(dict.fromkeys(names))
    return list(found)


def _from_csv(path: Path) -> list[str]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if "path" not in (reader.fieldnames or []):
            raise ScoreError(f"{path}: a list of recordings needs a 'path' column (it has {reader.fieldnames})")
        return [str(p if Path(p).is_absolute() else path.parent / p)
                for p in (row["path"].strip() for row in reader) if p]


# ------------------------------------------------------------------------------------------------ scoring


@dataclass(frozen=True)
class ScoreSettings:
    model: str  # a version folder, a model folder or a models root (as SER_MODEL_PATH)
    timeline: bool = False  # also one row per window
    batch: int = 32  # model inputs per call


#: Per process (a worker, a Ray worker), by model and whether its graph is loaded: loaded once.
_ANALYSERS: dict[tuple[str, bool], Any] = {}


def _analyser(model: str, graph: bool = True):
    """The model's Analyser; ``graph=False``: without the SavedModel (no TensorFlow), for features only."""
    if (model, True) in _ANALYSERS:
        return _ANALYSERS[model, True]
    if (model, graph) not in _ANALYSERS:
        from speech_emotion.model import ExportedModel
        from speech_emotion.predict import Analyser

        _ANALYSERS[model, graph] = Analyser(ExportedModel.load(model, graph=graph))
    return _ANALYSERS[model, graph]


def model_labels(model: str) -> tuple[list[str], str]:
    """The labels of ``model`` and a description of it (name, version, folder), read from its metadata."""
    from speech_emotion.model import METADATA_FILE, resolve_model_dir

    folder = resolve_model_dir(model)
    meta = json.loads((folder / METADATA_FILE).read_text())
    return list(meta["labels"]), f"{meta['name']}/{meta['version']} ({folder})"


def score_chunk(paths: list[str], settings: ScoreSettings) -> list[dict[str, Any]]:
    """Rows for ``paths`` (in order): each file decoded and prepared, then every input in batched model calls.
    A file that cannot be scored gets a row with its error instead of failing the chunk."""
    return answer_chunk(prepare_chunk(paths, settings), settings)


def prepare_chunk(paths: list[str], settings: ScoreSettings) -> list[tuple[str, Any]]:
    """Each path with its model inputs (a :class:`speech_emotion.predict.Prepared` without its audio) or the
    error that stops it from being scored. No model call: a process that only prepares never loads one."""
    analyser = _analyser(settings.model, graph=False)
    prepared: list[tuple[str, Any]] = []
    for path in paths:
        try:
            p = analyser.prepare(read_audio(path), timeline=settings.timeline)
            prepared.append((path, dataclasses.replace(p, audio=None)))  # the samples are not needed further
        except AudioError as exc:  # undecodable, too short, no speech: named in the row
            prepared.append((path, str(exc)))
        except OSError as exc:
            prepared.append((path, f"{path}: {exc.strerror or exc}"))
    return prepared


def answer_chunk(prepared: list[tuple[str, Any]], settings: ScoreSettings) -> list[dict[str, Any]]:
    """Rows for the output of :func:`prepare_chunk`: every input in batched model calls, then each file's answer."""
    from speech_emotion.features import pad_batch

    analyser = _analyser(settings.model)
    rows: list[dict[str, Any]] = []
    inputs = [x for _, p in prepared if not isinstance(p, str) for x in p.inputs]
    # Batches of inputs of similar length: less padding to compute (padding frames are masked, so the answers
    # are those of each input alone, to float rounding).
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))
    probabilities: list = [None] * len(inputs)
    for i in range(0, len(order), settings.batch):
        take = order[i:i + settings.batch]
        for j, row in zip(take, analyser.model.predict(pad_batch([inputs[j] for j in take]))):
            probabilities[j] = row
    labels, start = analyser.labels, 0
    for path, p in prepared:
        if isinstance(p, str):
            rows.append(_row(path, labels, None, error=p, timeline=settings.timeline))
            continue
        answer = analyser.answer(p, probabilities[start:start + len(p.inputs)])
        start += len(p.inputs)
        rows.append(_row(path, labels, answer.probabilities, speech=answer.speech_seconds,
                         timeline=settings.timeline))
        for segment in answer.timeline or []:
            rows.append(_row(path, labels, segment.probabilities, start=segment.start, end=segment.end,
                             timeline=True))
    return rows


def _row(path: str, labels: list[str], probabilities, *, speech: float | None = None, error: str = "",
         start: float | None = None, end: float | None = None, timeline: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"path": path}
    if timeline:  # the whole recording's row has no start and end
        row.update(start=start, end=end)
    if probabilities is None:
        row.update(emotion=None, probability=None, **dict.fromkeys(labels))
    else:
        values = [round(float(v), 6) for v in probabilities]
        best = int(np.argmax(probabilities))
        row.update(emotion=labels[best], probability=values[best], **dict(zip(labels, values)))
    row.update(speech_seconds=speech, error=error)
    return row


def columns(labels: list[str], timeline: bool) -> list[str]:
    return ["path", *(["start", "end"] if timeline else []), "emotion", "probability", *labels,
            "speech_seconds", "error"]


# ------------------------------------------------------------------------------------------------ engines


#: How much lower than the model's process the local preparing workers run (``os.nice``): with as many workers
#: as cores and the model's process beside them, the cores are oversubscribed, and the model's process, which
#: every chunk's answers wait for (its start first of all), should not wait for a core. Measured on 2 cores,
#: 2,140 files: 17.0-17.9 s with 10 against 19.2-20.3 s without (4 runs each, alternating), the first
#: chunk back after 7.1-7.5 s against 9.6-11.3 s.
PREPARER_NICENESS = 10


def _features_init(model: str, niceness: int = 0) -> None:
    """A process that decodes and computes features only: the model's settings, no TensorFlow; ``niceness``
    added to its scheduling niceness (not on Ray, whose worker processes go on to run other tasks)."""
    from speech_emotion.runtime import retain_freed_memory

    if niceness:
        os.nice(niceness)
    retain_freed_memory()
    _analyser(model, graph=False)


#: Chunks in flight (being prepared, or prepared and waiting for their model calls) per preparing worker:
#: enough to keep the workers busy while the model's process starts (a few MB of features per chunk).
IN_FLIGHT = 8


def _started() -> None:
    """A task that does nothing: the process that runs it has run its initializer."""


def _worker_init(model: str) -> None:
    """One model per worker process, on one thread: the processes are the parallelism. (One thread also makes
    the model's sums run in one order, so a worker process and a Ray worker answer to the last digit alike.)"""
    if (model, True) in _ANALYSERS:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from speech_emotion.runtime import import_tensorflow, retain_freed_memory

    tf = import_tensorflow()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    retain_freed_memory()
    _analyser(model)


#: Thread counts of the numerical libraries in a worker, read when they are first imported: one each.
#: (Ray sets the same for a one-CPU task; the number of BLAS threads changes the order of the features' sums,
#: and with it their last digits.)
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@contextlib.contextmanager
def _one_thread_each():
    """:data:`ONE_THREAD` in the environment that worker processes started inside inherit."""
    saved = {k: os.environ.get(k) for k in ONE_THREAD}
    os.environ.update(ONE_THREAD)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_local(chunks: list[list[str]], settings: ScoreSettings, jobs: int) -> Iterator[list[dict[str, Any]]]:
    """Rows per chunk as chunks finish: in this process (``jobs`` 1), or with ``jobs`` worker processes
    preparing chunks and one more making their model calls (the only one with TensorFlow)."""
    if jobs <= 1:
        for chunk in chunks:
            yield score_chunk(chunk, settings)
        return
    spawn = get_context("spawn")  # not fork: TensorFlow's threads do not survive a fork
    with _one_thread_each(), \
            ProcessPoolExecutor(jobs, mp_context=spawn, initializer=_features_init,
                                initargs=(settings.model, PREPARER_NICENESS)) as preparers, \
            ProcessPoolExecutor(1, mp_context=spawn, initializer=_worker_init,
                                initargs=(settings.model,)) as model:
        model.submit(_started)  # a pool starts its process on the first task: start loading the model now
        todo = iter(chunks)
        preparing: set = set()
        answering: set = set()
        while True:
            # At most IN_FLIGHT chunks per worker prepared and not yet answered: while the model's process
            # starts or lags, the workers wait instead of holding ever more features in memory.
            for c in _take(todo, IN_FLIGHT * jobs - len(preparing) - len(answering)):
                preparing.add(preparers.submit(prepare_chunk, c, settings))
            if not preparing and not answering:
                break
            done, _ = wait(preparing | answering, return_when=FIRST_COMPLETED)
            for future in done:
                if future in preparing:
                    preparing.remove(future)
                    answering.add(model.submit(answer_chunk, future.result(), settings))
                else:
                    answering.remove(future)
                    yield future.result()


def ray_init(address: str) -> bool:
    """Connect to Ray at ``address`` ("local" starts it on this machine, else as ``ray.init(address=...)``:
    "auto", "ray://head:10001"); True when this call started it (and should shut it down). Also training's
    way in (training/cluster.py). ImportError when Ray is not installed."""
    try:
        import ray
    except ImportError:
        raise ImportError("--ray-address needs Ray: pip install '.[cluster]'") from None
    if ray.is_initialized():
        return False
    # "local" as Ray's own address: a new instance even where RAY_ADDRESS or a `ray start` on this machine
    # names another one (with no address, ray.init would join that one instead).
    ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    return True


#: Ray: one model actor per this many CPUs of preparing tasks (a batched model call takes a fraction of the
#: time a chunk's decoding and features take).
PREPARERS_PER_MODEL = 4


def run_ray(chunks: list[list[str]], settings: ScoreSettings, address: str) -> Iterator[list[dict[str, Any]]]:
    """Rows per chunk as they finish on Ray (``address``: "local" starts Ray on this machine, else as
    ``ray.init(address=...)``: "auto", "ray://head:10001"): as on local cores, tasks of one CPU prepare the
    chunks and actors holding the model (one per :data:`PREPARERS_PER_MODEL` CPUs) answer them. The
    recordings' paths must be readable on the cluster's nodes (a shared file system), and the model folder too."""
    try:
        # A Ray instance started here passes this environment on to every worker it starts, including those
        # it starts ahead of any task; one joined gets it per task through a runtime_env, for which Ray starts
        # workers of their own (about 2 s more before the first task runs, measured on local Ray).
        with _one_thread_each():
            started = ray_init(address)
    except ImportError as exc:
        raise ScoreError(str(exc)) from None
    import ray

    try:
        env = None if started else {"env_vars": ONE_THREAD}
        prepare = ray.remote(num_cpus=1, runtime_env=env)(_ray_prepare)
        width = max(1, int(ray.cluster_resources().get("CPU", 1)))
        # An actor takes no CPU from the tasks' share: it is busy a fraction of the time they are.
        answerer = ray.remote(num_cpus=0, runtime_env=env)(_RayAnswerer)
        answerers = [answerer.remote(settings.model) for _ in range(max(1, width // PREPARERS_PER_MODEL))]
        load = [0] * len(answerers)
        todo = iter(chunks)
        preparing: list = []
        answering: dict[Any, int] = {}
        while True:
            for c in _take(todo, IN_FLIGHT * width - len(preparing) - len(answering)):  # as run_local
                preparing.append(prepare.remote(c, settings))
            if not preparing and not answering:
                break
            done, _ = ray.wait(preparing + list(answering), num_returns=1)
            for ref in done:
                if ref in answering:
                    load[answering.pop(ref)] -= 1
                    yield ray.get(ref)
                    continue
                preparing.remove(ref)
                k = load.index(min(load))  # the least busy actor; the prepared chunk goes to it, not here
                load[k] += 1
                answering[answerers[k].answer.remote(ref, settings)] = k
    finally:
        if started:
            ray.shutdown()


def _ray_prepare(paths: list[str], settings: ScoreSettings) -> list[tuple[str, Any]]:
    _features_init(settings.model)  # Ray reuses its worker processes: the settings stay loaded between tasks
    return prepare_chunk(paths, settings)


class _RayAnswerer:
    """A Ray actor with the model loaded once: :func:`answer_chunk` for prepared chunks."""

    def __init__(self, model: str):
        _worker_init(model)

    def answer(self, prepared: list[tuple[str, Any]], settings: ScoreSettings) -> list[dict[str, Any]]:
        return answer_chunk(prepared, settings)


def _take(items: Iterator, n: int) -> list:
    """The next ``n`` items (fewer at the end; none for ``n`` <= 0)."""
    out: list = []
    if n <= 0:
        return out
    for item in items:
        out.append(item)
        if len(out) == n:
            break
    return out


# ------------------------------------------------------------------------------------------------ the run


@dataclass
class ScoreRun:
    """What a run did: rows written, files scored now, files taken from an earlier interrupted run."""

    output: Path
    rows: int
    scored: int
    resumed: int
    failed: int
    seconds: float
    first_chunk_seconds: float | None = None  # start-up included: until the first chunk's rows came back
    first_chunk_files: int = 0
    errors: list[str] = field(default_factory=list)


def score(inputs: Iterable[str], output: str | Path, *, model: str, timeline: bool = False, jobs: int = 0,
          chunk: int = 64, batch: int = 32, ray_address: str | None = None, progress: bool = True) -> ScoreRun:
    """Score every recording ``inputs`` name into ``output`` (.csv, or .parquet with pyarrow installed)."""
    output = Path(output)
    if output.suffix.lower() not in (".csv", ".parquet"):
        raise ScoreError(f"{output}: the output is a .csv or .parquet file")
    if output.suffix.lower() == ".parquet":
        _require_pyarrow()
    paths = find_recordings(inputs)
    labels, described = model_labels(model)
    settings = ScoreSettings(model=model, timeline=timeline, batch=batch)
    header = {"model": described, "labels": labels, "timeline": timeline}
    partial = output.with_name(output.name + PARTIAL_SUFFIX)
    done = _read_partial(partial, header)
    todo = [p for p in paths if p not in done]
    chunks = [todo[i:i + chunk] for i in range(0, len(todo), chunk)]
    jobs = jobs or os.cpu_count() or 1
    started = time.perf_counter()
    bar = _progress(len(paths), len(paths) - len(todo), progress)
    output.parent.mkdir(parents=True, exist_ok=True)
    with partial.open("a") as f:
        if not done:
            f.write(json.dumps({"header": header}) + "\n")
        engine = run_ray(chunks, settings, ray_address) if ray_address else run_local(chunks, settings, jobs)
        first_chunk = None
        for rows in engine:
            if first_chunk is None:
                first_chunk = (time.perf_counter() - started, sum(1 for row in rows if row.get("start") is None))
            for row in rows:
                f.write(json.dumps(row) + "\n")
                if row.get("start") is None:
                    done.setdefault(row["path"], []).insert(0, row)
                else:
                    done.setdefault(row["path"], []).append(row)
            f.flush()
            os.fsync(f.fileno())
            bar.update(sum(1 for row in rows if row.get("start") is None))
    bar.close()
    rows = [row for p in paths for row in done[p]]
    _write(output, rows, columns(labels, timeline))
    partial.unlink()
    whole = [r for r in rows if r.get("start") is None]
    failed = [r for r in whole if r["error"]]
    return ScoreRun(output, len(rows), len(todo), len(paths) - len(todo), len(failed),
                    time.perf_counter() - started, *(first_chunk or (None, 0)),
                    errors=[f"{r['path']}: {r['error']}" for r in failed])


def _read_partial(partial: Path, header: dict) -> dict[str, list[dict]]:
    """The rows an interrupted run finished, by path (a torn last line, from a kill mid-write, is dropped)."""
    done: dict[str, list[dict]] = {}
    if not partial.exists():
        return done
    lines = partial.read_text().splitlines()
    try:
        first = json.loads(lines[0])["header"] if lines else None
    except (ValueError, KeyError, TypeError):
        first = None
    if first != header:
        raise ScoreError(f"{partial} is from a run with other settings ({first}); delete it to start over, or "
                         f"run with the same model and --timeline setting to finish it")
    for line in lines[1:]:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        done.setdefault(row["path"], []).append(row)
    # a file counts as done only with its whole-recording row (a torn chunk is scored again)
    return {p: sorted(rows, key=lambda r: (r.get("start") is not None, r.get("start") or 0))
            for p, rows in done.items() if any(r.get("start") is None for r in rows)}


def _write(output: Path, rows: list[dict], names: list[str]) -> None:
    tmp = output.with_name(f".{output.name}.tmp")
    if output.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in names} for r in rows]), tmp)
    else:
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=names, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    tmp.replace(output)


def _require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ScoreError("a .parquet output needs pyarrow: pip install '.[cluster]' (or write .csv)") from None


def _progress(total: int, initial: int, show: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="file", file=sys.stderr, dynamic_ncols=True, smoothing=0.1,
                disable=not show)
