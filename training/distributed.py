"""Data-parallel training of one model across workers: ``tf.distribute.MultiWorkerMirroredStrategy``.

Every worker holds a full copy of the model and reads its own shard of each global batch (global batch =
per-worker batch x workers). Each step, every worker computes the gradient of its shard's loss (scaled by
the *global* batch size), the gradients are summed across workers (an all-reduce), and every worker
applies the same sum with the same optimizer state, so the copies stay identical: one model, trained on
the whole global batch per step.

Keras 3's ``model.fit`` does not run under this strategy (keras-team/keras#20585), hence the custom loop:
``strategy.run`` of a train step, ``ReduceOp.SUM`` of the replicas' losses, ``optimizer.apply_gradients``.

Two ways to run it::

    # N workers on this machine (local ports, one process each): a test of the mechanics, not a speed-up
    .venv/bin/python -m training.distributed --workers 2 --data data/emodb --steps 20

    # one worker of a real cluster: every machine runs the same command with its own TF_CONFIG
    TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type": "worker", "index": 0}}' \\
        .venv/bin/python -m training.distributed --from-env --data data/emodb --steps 200 --out runs/mw

Worker 0 (the chief) writes ``summary.json`` (loss per step, steps, batches, seconds), ``initial.npz``
and ``model.weights.h5``; every worker writes ``worker-<i>.npz`` (its final weights) and
``worker-<i>.json`` (their checksum), so that one can check that the copies agree.

What it is not: the project's training recipe (``python -m training train``: validation, epoch choice,
degraded copies, export). It trains one model for a number of steps, to show and test the mechanics.
"""

from __future__ import annotations

# Why no model.fit: with tensorflow 2.21.0 + keras 3.15.1, two local workers, model.fit -> ValueError: Attempt to convert a value (PerReplica:{0: <tf.Tensor ...>}) with an unsupported type (<class 'tensorflow.python.distribute.values.PerReplica'>) to a Tensor.

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

#: Bundled corpus, used when neither --data nor --arrays is given.
DEFAULT_DATA = "data/emodb"


@dataclass
class RunConfig:
    """What every worker needs to know; identical on all workers (the launcher passes it as JSON)."""

    arrays: str  # .npz from :func:`save_arrays`: the clips' features and labels
    out: str
    steps: int = 10
    per_worker_batch: int = 8
    model: str = "crnn"
    model_args: dict = field(default_factory=dict)
    seed: int = 0
    #: Every step trains on the same first global batch (a check that the loop learns: its loss must fall).
    fixed_batch: bool = False
    #: Set every dropout rate to 0, so that a step is a deterministic function of the weights and the batch
    #: (what the comparison with single-process training needs).
    deterministic: bool = False
    #: TensorFlow intra-/inter-op threads per worker; 0: TensorFlow's default (all cores).
    threads: int = 0


# --------------------------------------------------------------------------- data


def load_arrays(path: str | Path) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """``(features per clip (frames, dims), label index per clip, class names)`` from :func:`save_arrays`."""
    with np.load(path, allow_pickle=False) as z:
        frames, lengths = z["frames"], z["lengths"]
        labels, classes = z["labels"], [str(c) for c in z["classes"]]
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [frames[a:b] for a, b in zip(bounds[:-1], bounds[1:])], labels, classes


def save_arrays(path: str | Path, features: list[np.ndarray], labels: np.ndarray, classes: list[str]) -> Path:
    """Variable-length clips as one array of frames plus their lengths (no pickled objects)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.npz")  # workers sharing a folder never read half a file
    np.savez(tmp, frames=np.concatenate(features).astype(np.float32),
             lengths=np.array([len(f) for f in features], dtype=np.int64),
             labels=np.asarray(labels, dtype=np.int64), classes=np.array(classes))
    os.replace(tmp, path)
    return path


def corpus_arrays(data: str, feature_set: str = "logmel", *, limit: int | None = None,
                  cache_dir: str | None = ".cache/features") -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Features of a corpus' clips (``limit``: the first N by path) and their emotions as class indices."""
    from speech_emotion.features import FEATURE_SETS
    from training.corpora import load_corpus
    from training.extraction import FeatureCache, extract_features

    corpus = load_corpus(data)
    utterances = corpus.utterances[:limit] if limit else corpus.utterances
    settings = FEATURE_SETS[feature_set]
    extracted = extract_features([u.path for u in utterances], settings, cache=FeatureCache(cache_dir),
                                 progress=False)
    kept = [(u, f) for u, f in zip(utterances, extracted.features) if f is not None]
    classes = sorted({u.emotion for u, _ in kept})
    # finish() without a speaker reference: for reference features, each clip's own mean spectrum.
    features = [settings.finish(f) for _, f in kept]
    labels = np.array([classes.index(u.emotion) for u, _ in kept], dtype=np.int64)
    return features, labels, classes


def global_batches(n_items: int, steps: int, global_batch: int, *, seed: int, fixed: bool) -> np.ndarray:
    """``(steps, global_batch)`` item indices: shuffled epochs end to end, or the same first batch each step."""
    rng = np.random.default_rng(seed)
    if fixed:
        first = rng.permutation(n_items)[:global_batch]
        if len(first) < global_batch:
            raise ValueError(f"a fixed batch of {global_batch} needs as many clips, not {n_items}")
        return np.tile(first, (steps, 1))
    needed = steps * global_batch
    order = np.concatenate([rng.permutation(n_items) for _ in range(-(-needed // n_items))])
    return order[:needed].reshape(steps, global_batch)


def shard(batches: np.ndarray, worker: int, workers: int) -> np.ndarray:
    """Worker ``worker``'s rows of every global batch: the ``worker``-th of ``workers`` equal slices."""
    per_worker = batches.shape[1] // workers
    return batches[:, worker * per_worker:(worker + 1) * per_worker]


def batch_arrays(features: list[np.ndarray], labels: np.ndarray, n_classes: int, rows: np.ndarray):
    """One model input (zero-padded to the batch's longest clip, as in serving) and its one-hot targets."""
    from speech_emotion.features import pad_batch

    x = pad_batch([features[i] for i in rows])
    y = np.eye(n_classes, dtype=np.float32)[labels[rows]]
    return x, y


# --------------------------------------------------------------------------- model


def build_model(model: str, dims: int, n_classes: int, model_args: dict, *, deterministic: bool = False):
    """The project's model builder (``training/models.py``), compiled; build it inside the strategy's scope,
    so that its variables and the optimizer's slots are mirrored."""
    import keras

    from training.models import MODEL_BUILDERS

    net = MODEL_BUILDERS[model]((None, dims), n_classes, **model_args)
    if deterministic:
        for layer in net._flatten_layers(include_self=False):
            if isinstance(layer, keras.layers.Dropout):  # SpatialDropout1D too
                layer.rate = 0.0
    return net


def per_example_loss(model):
    """The model's compiled loss, returning one value per example (the distributed step scales it itself)."""
    loss = model.loss
    return type(loss).from_config({**loss.get_config(), "reduction": None})


def moving_statistics(model) -> list:
    """The model's non-trainable float variables (BatchNormalization's moving mean and variance)."""
    return [v for v in model.non_trainable_variables if "float" in str(v.dtype)]


def average_across_workers(strategy, variables: list) -> None:
    """Set each variable, on every worker, to its mean over the workers (an all-reduce)."""
    import tensorflow as tf

    if not variables:
        return

    @tf.function
    def sync():
        def replica_fn():
            ctx = tf.distribute.get_replica_context()
            means = ctx.all_reduce(tf.distribute.ReduceOp.MEAN, [tf.identity(v.value) for v in variables])
            for v, m in zip(variables, means):
                v.assign(m)

        strategy.run(replica_fn)

    sync()


def weights_of(model) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in model.weights]


def checksum(arrays: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def save_weight_arrays(path: Path, arrays: list[np.ndarray]) -> None:
    np.savez(path, **{f"w{i:03d}": a for i, a in enumerate(arrays)})


def load_weight_arrays(path: str | Path) -> list[np.ndarray]:
    with np.load(path) as z:
        return [z[k] for k in sorted(z.files)]


# --------------------------------------------------------------------------- one worker


def run_worker(cfg: RunConfig) -> dict:
    """Train as the worker TF_CONFIG (in the environment) describes; returns this worker's record.

    Long on purpose: under MultiWorkerMirroredStrategy the order of creation is the contract (the strategy
    before any other TensorFlow op, the model and optimizer inside its scope, the distributed dataset and
    the step function over them), and this function reads top to bottom in that order."""
    began = time.perf_counter()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    import keras

    if cfg.threads:
        tf.config.threading.set_intra_op_parallelism_threads(cfg.threads)
        tf.config.threading.set_inter_op_parallelism_threads(cfg.threads)
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    if not tf_config.get("cluster"):
        raise SystemExit("TF_CONFIG is not set (or has no cluster): see `python -m training.distributed --help`")
    if set(tf_config["cluster"]) != {"worker"}:
        raise SystemExit("TF_CONFIG's cluster must list only 'worker' tasks (worker 0 is the chief), "
                         f"not {sorted(tf_config['cluster'])}")
    keras.utils.set_random_seed(cfg.seed)  # the chief's initial values are broadcast anyway; this is for dropout
    # Collectives over the network (gRPC; NCCL on GPUs when AUTO finds them). Created before any other op.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    worker, workers = strategy.cluster_resolver.task_id, len(tf_config["cluster"]["worker"])
    is_chief = worker == 0
    # One replica per worker on CPU; a worker with several GPUs splits its slice between them.
    local_replicas = strategy.num_replicas_in_sync // workers

    features, labels, classes = load_arrays(cfg.arrays)
    dims, n_classes = features[0].shape[1], len(classes)
    global_batch = cfg.per_worker_batch * workers
    batches = global_batches(len(features), cfg.steps, global_batch, seed=cfg.seed, fixed=cfg.fixed_batch)

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        # One input pipeline per worker; it reads only its own shard of every global batch, one batch per
        # local replica and step (the strategy hands consecutive batches to the worker's replicas).
        rows = shard(batches, context.input_pipeline_id, context.num_input_pipelines)
        per_replica = context.get_per_replica_batch_size(global_batch)

        def gen():
            for step_rows in rows:
                for k in range(local_replicas):
                    yield batch_arrays(features, labels, n_classes, step_rows[k * per_replica:(k + 1) * per_replica])

        spec = (tf.TensorSpec((per_replica, None, dims), tf.float32),
                tf.TensorSpec((per_replica, n_classes), tf.float32))
        return tf.data.Dataset.from_generator(gen, output_signature=spec).prefetch(1)

    dist_data = strategy.distribute_datasets_from_function(dataset_fn)

    with strategy.scope():
        model = build_model(cfg.model, dims, n_classes, cfg.model_args, deterministic=cfg.deterministic)
        optimizer = model.optimizer
        loss_fn = per_example_loss(model)
    initial = weights_of(model)
    setup = time.perf_counter() - began  # import, cluster start-up, the model (its variables broadcast)

    def step_fn(x, y):
        with tf.GradientTape() as tape:
            probs = model(x, training=True)
            # Sum over this replica's examples / global batch: the replicas' losses add up to the global mean.
            loss = tf.nn.compute_average_loss(loss_fn(y, probs), global_batch_size=global_batch)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        grads = tape.gradient(loss, model.trainable_variables)
        # Keras 3's TensorFlow optimizer, called in a replica context, all-reduces the gradients first
        # (ReduceOp.SUM across all replicas of all workers: TFOptimizer._all_reduce_sum_gradients), then
        # applies the sum to every copy: the gradient of the mean loss over the global batch.
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function
    def train_step(iterator):
        per_replica = strategy.run(step_fn, args=next(iterator))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    iterator = iter(dist_data)
    losses, seconds = [], []
    start = time.perf_counter()
    for _ in range(cfg.steps):
        t0 = time.perf_counter()
        losses.append(float(train_step(iterator)))  # float(): waits for the step (and its all-reduce)
        seconds.append(time.perf_counter() - t0)
    total = time.perf_counter() - start

    # BatchNormalization's moving statistics are not trainable and not synchronised: each worker has averaged
    # the statistics of its own shards. Their mean over workers is what one model that saw every shard
    # holds (a moving average is linear in what it averages), and the same on every worker.
    average_across_workers(strategy, moving_statistics(model))
    final = weights_of(model)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_weight_arrays(out / f"worker-{worker}.npz", final)
    steady = seconds[1:] or seconds  # the first step traces the function and builds the collectives
    record = {
        "worker": worker, "workers": workers, "replicas": strategy.num_replicas_in_sync, "losses": losses,
        "initial_checksum": checksum(initial), "final_checksum": checksum(final),
        "trainable_checksum": checksum([np.array(v.numpy()) for v in model.trainable_weights]),
        "setup_seconds": setup, "first_step_seconds": seconds[0],
        "n_weights": len(final), "n_trainable": len(model.trainable_weights),
    }
    (out / f"worker-{worker}.json").write_text(json.dumps(record, indent=2))
    if is_chief:
        save_weight_arrays(out / "initial.npz", initial)
        model.save_weights(out / "model.weights.h5")
        summary = {
            **{k: v for k, v in asdict(cfg).items() if k not in ("out",)},
            "workers": workers, "replicas": strategy.num_replicas_in_sync, "global_batch": global_batch,
            "classes": classes, "clips": len(features),
            "losses": losses, "step_seconds": seconds, "setup_seconds": setup, "first_step_seconds": seconds[0],
            "seconds_per_step": float(np.median(steady)),
            "clips_per_second": global_batch / float(np.median(steady)),
            "seconds": total,
            "tensorflow": tf.__version__, "keras": keras.__version__,
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return record


# --------------------------------------------------------------------------- the same steps in one process


def reference_training(cfg: RunConfig, workers: int, initial: list[np.ndarray]):
    """What ``workers`` synchronous workers compute, done in this process without any strategy.

    Each step: the gradient of every worker's shard (each shard's loss scaled by the global batch), summed,
    applied once; from the same initial weights, on the same batches. Why not simply one forward pass over
    the whole global batch: BatchNormalization normalises with the statistics of the batch it sees, and a
    worker sees its shard (MultiWorkerMirroredStrategy does not synchronise them), and each shard is
    padded to its own longest clip. The moving statistics are averaged over the shards, as
    :func:`run_worker` averages them over the workers. Returns ``(losses per step, the model)``.
    """
    import tensorflow as tf

    features, labels, classes = load_arrays(cfg.arrays)
    dims, n_classes = features[0].shape[1], len(classes)
    global_batch = cfg.per_worker_batch * workers
    batches = global_batches(len(features), cfg.steps, global_batch, seed=cfg.seed, fixed=cfg.fixed_batch)
    model = build_model(cfg.model, dims, n_classes, cfg.model_args, deterministic=cfg.deterministic)
    model.set_weights(initial)
    loss_fn = per_example_loss(model)
    stats = moving_statistics(model)
    losses = []
    for step in range(cfg.steps):
        total, summed = 0.0, None
        before, after = [v.numpy() for v in stats], []
        for w in range(workers):
            x, y = batch_arrays(features, labels, n_classes, shard(batches, w, workers)[step])
            for v, value in zip(stats, before):
                v.assign(value)
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(loss_fn(y, model(x, training=True))) / global_batch
            grads = tape.gradient(loss, model.trainable_variables)
            summed = grads if summed is None else [a + b for a, b in zip(summed, grads)]
            total += float(loss)
            after.append([v.numpy() for v in stats])
        for v, values in zip(stats, zip(*after)):  # each worker's update of the moving statistics, averaged
            v.assign(np.mean(values, axis=0))
        model.optimizer.apply_gradients(zip(summed, model.trainable_variables))
        losses.append(total)
    return losses, model


# --------------------------------------------------------------------------- local launcher


def free_ports(n: int) -> list[int]:
    """``n`` ports free on localhost now (bound together, so distinct; another process may still take one)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("localhost", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def launch_local(cfg: RunConfig, workers: int, *, timeout: float = 600.0) -> dict:
    """Run ``workers`` worker processes on this machine (TF_CONFIG each, local ports); the chief's summary."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ports = free_ports(workers)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs, logs = [], []
    for i in range(workers):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}
        log = open(out / f"worker-{i}.log", "w")
        logs.append(log)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "training.distributed", "--from-env", "--config-json", json.dumps(asdict(cfg))],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parent.parent))
    deadline = time.monotonic() + timeout
    try:
        codes = [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
    except subprocess.TimeoutExpired:
        codes = None
    finally:
        for p in procs:  # a worker whose peer died waits for it forever: end the ones still running
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    if codes is None or any(codes):
        tails = "\n".join(f"--- worker {i} (exit {p.returncode}):\n"
                          + (out / f"worker-{i}.log").read_text()[-2000:] for i, p in enumerate(procs))
        raise RuntimeError(f"local workers failed (exit codes {[p.returncode for p in procs]}):\n{tails}")
    return {**json.loads((out / "summary.json").read_text()), "exit_codes": codes}


# --------------------------------------------------------------------------- command line


def _parse_model_args(pairs: list[str]) -> dict:
    args = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            args[key] = json.loads(value)
        except json.JSONDecodeError:
            args[key] = value
        if isinstance(args[key], list):
            args[key] = tuple(args[key])
    return args


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.distributed",
        description="Data-parallel training of one model (MultiWorkerMirroredStrategy, custom training loop).",
        epilog="Local: --workers N starts N worker processes here. Cluster: start one process per machine with "
               "--from-env and a TF_CONFIG naming every worker and this one's index (worker 0 is the chief).")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=2, help="local worker processes to start (default 2)")
    where.add_argument("--from-env", action="store_true", help="run as one worker of the cluster in $TF_CONFIG")
    p.add_argument("--data", help=f"corpus folder (default {DEFAULT_DATA} unless --arrays)")
    p.add_argument("--arrays", help="features and labels saved by a previous run (<out>/arrays.npz)")
    p.add_argument("--features", default="logmel", help="feature set for --data (default logmel)")
    p.add_argument("--limit", type=int, help="use the first N clips of the corpus")
    p.add_argument("--cache-dir", default=".cache/features")
    p.add_argument("--out", help="output folder (default runs/<time>_multiworker)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8, help="per worker; the global batch is this x workers")
    p.add_argument("--model", default="crnn")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fixed-batch", action="store_true", help="train every step on the same global batch")
    p.add_argument("--deterministic", action="store_true", help="dropout off: a step depends on weights and batch only")
    p.add_argument("--threads", type=int, help="TensorFlow threads per worker (default: local: cores / workers; "
                                               "--from-env: TensorFlow's default)")
    p.add_argument("--config-json", help=argparse.SUPPRESS)  # the launcher's hand-over to its workers
    args = p.parse_args(argv)

    if args.config_json:
        run_worker(RunConfig(**json.loads(args.config_json)))
        return 0

    out = Path(args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}_multiworker")
    arrays = args.arrays
    if not arrays:
        features, labels, classes = corpus_arrays(args.data or DEFAULT_DATA, args.features, limit=args.limit,
                                                  cache_dir=args.cache_dir)
        arrays = str(save_arrays(out / "arrays.npz", features, labels, classes))
    threads = args.threads
    if threads is None:
        threads = 0 if args.from_env else max(1, (os.cpu_count() or 1) // args.workers)
    cfg = RunConfig(arrays=arrays, out=str(out), steps=args.steps, per_worker_batch=args.batch_size,
                    model=args.model, model_args=_parse_model_args(args.model_arg), seed=args.seed,
                    fixed_batch=args.fixed_batch, deterministic=args.deterministic, threads=threads)
    if args.from_env:
        record = run_worker(cfg)
        print(json.dumps({k: record[k] for k in ("worker", "workers", "final_checksum")}))
        return 0
    summary = launch_local(cfg, args.workers)
    print(f"{summary['workers']} local worker(s), {threads} thread(s) each, global batch {summary['global_batch']} "
          f"({args.batch_size} per worker), {summary['steps']} steps of {summary['model']} on {summary['clips']} clips")
    print("loss per step: " + " ".join(f"{x:.4f}" for x in summary["losses"]))
    print(f"first step {summary['first_step_seconds']:.2f} s (tracing, collectives); then "
          f"{summary['seconds_per_step']:.3f} s per step (median), {summary['clips_per_second']:.1f} clips/s")
    print(f"wrote {out}/summary.json, {out}/model.weights.h5")
    return 0


if __name__ == "__main__":
    sys.exit(main())
