"""Training's independent parts as Ray tasks: the folds of a protocol (``train --ray-address``).

Each fold is fitted and scored by the same function as without Ray (``training.train.evaluate_fold``), with
the same seeds, on one Ray worker; the run's shared data (features, labels, degraded copies) goes to Ray's
object store once. The worker trains TensorFlow on ``ray_cpus_per_fold`` threads, the CPUs the task
reserved, so folds sharing a node do not oversubscribe it. Paths in the data (the corpus's audio, for
degraded copies and the robustness suite) must be readable on every node: a shared file system.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

from speech_emotion.score import ray_init

log = logging.getLogger(__name__)


def _threads(cpus: int) -> None:
    """TensorFlow on ``cpus`` threads in this worker (before its first operation; later calls are ignored)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(cpus)
        tf.config.threading.set_inter_op_parallelism_threads(min(cpus, 2))
    except RuntimeError:  # TensorFlow already running in this (reused) worker: set by its first task
        pass


def _fold_task(context, k: int, fold, evaluate: Callable, cpus: int):
    _threads(cpus)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return evaluate(context, k, fold)


def run_folds_on_ray(context, folds: list, evaluate: Callable) -> list[Any]:
    """``evaluate(context, k, fold)`` for every fold as a Ray task; the outcomes in fold order."""
    import ray

    cfg = context.cfg
    started = ray_init(cfg.ray_address)
    try:
        shared = ray.put(context)
        task = ray.remote(num_cpus=cfg.ray_cpus_per_fold)(_fold_task)
        refs = [task.remote(shared, k, fold, evaluate, cfg.ray_cpus_per_fold) for k, fold in enumerate(folds)]
        log.info("%d folds submitted to Ray (%s), %d CPUs each", len(refs), cfg.ray_address, cfg.ray_cpus_per_fold)
        outcomes = []
        for fold, ref in zip(folds, refs):
            outcome = ray.get(ref)
            m = outcome.report["metrics"]
            log.info("fold %s (on Ray): accuracy %.3f, UAR %.3f", fold.name, m["accuracy"], m["uar"])
            outcomes.append(outcome)
        return outcomes
    finally:
        if started:
            ray.shutdown()
