"""Data-parallel training on two local workers (MultiWorkerMirroredStrategy, TF_CONFIG, localhost ports):
both finish, their copies of the model agree, the loop learns, and the result is what one process computes
from the same initial weights and the same batches, i.e. the workers' gradients were all-reduced."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from speech_emotion.features import FEATURE_SETS
from tests.conftest import BUNDLED
from training.corpora import load_corpus
from training.distributed import (
    RunConfig,
    launch_local,
    load_weight_arrays,
    reference_training,
    save_arrays,
)
from training.extraction import extract_one

WORKERS = 2
#: A narrow CRNN: the mechanics are the same as the default's, the steps cheaper on two shared cores.
SMALL_CRNN = {"conv_filters": (16, 16), "lstm_units": 16, "attention_units": 16, "dense_units": 16}


def _localhost_listens() -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("localhost", 0))
            s.listen(1)
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _localhost_listens(),
                                reason="cannot open a TCP port on localhost, which the local workers talk over")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two workers, 4 clips each per step, 5 steps on one fixed global batch, dropout off (deterministic)."""
    root = tmp_path_factory.mktemp("multiworker")
    utterances = sorted(load_corpus(BUNDLED).utterances, key=lambda u: u.duration)[:8]  # the shortest clips
    settings = FEATURE_SETS["logmel"]
    classes = sorted({u.emotion for u in utterances})
    arrays = save_arrays(root / "arrays.npz", [extract_one(u.path, settings) for u in utterances],
                         np.array([classes.index(u.emotion) for u in utterances]), classes)
    cfg = RunConfig(arrays=str(arrays), out=str(root / "run"), steps=5, per_worker_batch=4, model="crnn",
                    model_args=SMALL_CRNN, seed=0, fixed_batch=True, deterministic=True, threads=1)
    summary = launch_local(cfg, WORKERS, timeout=300)
    records = [json.loads((root / "run" / f"worker-{i}.json").read_text()) for i in range(WORKERS)]
    return cfg, summary, records


def test_both_workers_finish_with_identical_weights(trained):
    cfg, summary, records = trained
    assert summary["exit_codes"] == [0] * WORKERS
    assert summary["workers"] == WORKERS and summary["global_batch"] == 4 * WORKERS
    assert [r["worker"] for r in records] == list(range(WORKERS))
    assert records[0]["initial_checksum"] == records[1]["initial_checksum"]
    assert records[0]["final_checksum"] == records[1]["final_checksum"]  # every weight, BatchNorm statistics too
    chief, other = (load_weight_arrays(f"{cfg.out}/worker-{i}.npz") for i in range(WORKERS))
    assert len(chief) == records[0]["n_weights"] and all(np.array_equal(a, b) for a, b in zip(chief, other))
    initial = load_weight_arrays(f"{cfg.out}/initial.npz")
    assert any(not np.array_equal(a, b) for a, b in zip(initial, chief)), "training changed nothing"


def test_loss_falls_on_a_fixed_batch(trained):
    _, summary, records = trained
    losses = summary["losses"]
    assert len(losses) == 5 and all(np.isfinite(losses))
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < losses[0] - 0.1, losses
    assert records[1]["losses"] == losses  # the loss reported is the sum over all replicas, on every worker


def test_same_result_as_one_process_on_the_same_batches(trained):
    """One process, from the chief's initial weights, summing the gradients of the two shards each step.

    Not a single forward pass over the whole global batch: BatchNormalization normalises with the statistics
    of the batch it sees, and each worker sees its own shard (see ``reference_training``). Equality is up to
    float rounding: Adam divides each gradient by its own running magnitude, so a weight whose gradient is
    rounding noise (the attention score's bias: softmax ignores it) moves by noise of order 1e-6.
    """
    cfg, summary, _ = trained
    losses, model = reference_training(cfg, WORKERS, load_weight_arrays(f"{cfg.out}/initial.npz"))
    np.testing.assert_allclose(summary["losses"], losses, rtol=1e-5)
    chief = load_weight_arrays(f"{cfg.out}/worker-0.npz")
    for variable, value in zip(model.weights, chief):
        np.testing.assert_allclose(value, variable.numpy(), atol=1e-4, rtol=1e-4, err_msg=variable.path)
