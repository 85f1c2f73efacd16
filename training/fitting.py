"""Fitting one network: batches, the epoch chooser, the fit loop.

    items (variable-length frame features) -> tf.data batches of similar length, drawn and augmented anew
    each epoch -> model.fit -> the epoch (or the mean of a window of epochs) that scored best on validation

Nothing here knows about corpora, protocols or run folders: :mod:`training.train` calls :func:`fit_model`
for every fold and the final model; :func:`predict_proba` scores items with a fitted model.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from speech_emotion.features import pad_batch
from training.evaluate import uar


# ----------------------------------------------------------------------------------------------- batches


def _batches_by_length(n: int, lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    order = np.argsort(lengths, kind="stable")
    return [order[i: i + batch_size] for i in range(0, n, batch_size)]


def predict_proba(model, features: list[np.ndarray], batch_size: int = 64) -> np.ndarray:
    """Class probabilities for every item, batching items of similar length together (less padding).

    ``predict_on_batch`` runs Keras's compiled predict function: a validation set called every epoch is
    traced once per batch shape, then each call costs a sixth of an eager ``model(x)`` (EMO-DB, 58 clips:
    31 against 182 ms).
    """
    if not features:
        return np.zeros((0, model.outputs[0].shape[-1]), dtype=np.float32)
    lengths = np.array([f.shape[0] for f in features])
    probs = np.zeros((len(features), model.outputs[0].shape[-1]), dtype=np.float32)
    for idx in _batches_by_length(len(features), lengths, batch_size):
        probs[idx] = np.asarray(model.predict_on_batch(pad_batch([features[i] for i in idx])))
    return probs


def _make_batches(features, onehot, weights, *, batch_size: int, seed: int, augment=None, sample=None,
                  paired: bool = False):
    """Training batches as a tf.data pipeline: reshuffled every epoch, items of similar length share a batch
    (sorted by length inside windows of 8 batches: little padding, still random batch composition), optional
    augmentation per item. ``sample(j, rng)``, when given, makes item ``j``'s input anew each epoch (a speaker
    reference drawn per item: :class:`training.speaker.ReferenceSampler`) before augmentation. With ``paired``,
    a batch of ``n`` items has ``2n`` rows: each item's two views from ``sample.pair(j, rng)``
    (:meth:`training.copies.CopySampler.pair`), first views first, each augmented on its own.

    The signature is declared with a free time axis: letting Keras infer it from the first batches (as it
    does for a PyDataset) fixes the time axis whenever those happen to have the same padded length.
    """
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    lengths = np.array([f.shape[0] for f in features])
    onehot = np.asarray(onehot, dtype=np.float32)
    weights = np.asarray(weights, dtype=np.float32)

    def epoch():
        order = rng.permutation(len(features))
        window = batch_size * 8
        chunks = [order[i: i + window] for i in range(0, len(order), window)]
        order = np.concatenate([c[np.argsort(lengths[c], kind="stable")] for c in chunks])
        batches = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
        rng.shuffle(batches)
        for idx in batches:
            if paired:
                views = [sample.pair(j, rng) for j in idx]
                items = [v[0] for v in views] + [v[1] for v in views]
                idx = np.concatenate([idx, idx])
            else:
                items = [sample(j, rng) if sample else features[j] for j in idx]
            items = [augment(x, rng) for x in items] if augment else items
            yield pad_batch(items).astype(np.float32), onehot[idx], weights[idx]

    signature = (tf.TensorSpec((None, None, features[0].shape[1]), tf.float32),
                 tf.TensorSpec((None, onehot.shape[1]), tf.float32),
                 tf.TensorSpec((None,), tf.float32))
    n_batches = -(-len(features) // batch_size)
    # prefetch: the next batches are drawn, augmented and padded while the model trains on this one
    return (tf.data.Dataset.from_generator(epoch, output_signature=signature)
            .apply(tf.data.experimental.assert_cardinality(n_batches))
            .prefetch(2))


# ------------------------------------------------------------------------------------------ fitting


@dataclass
class FitResult:
    model: Any
    history: dict[str, list[float]]
    best_epoch: int  # 1-based; the epoch whose weights the model holds
    seconds: float


#: Epochs averaged when judging the validation loss: one validation speaker is a noisy judge, and on
#: EMO-DB leave-one-speaker-out the smoothed loss chose better epochs than the raw loss or the
#: validation UAR did (mean fold UAR 0.694 against 0.676 and 0.653, measured on one run's curves).
SMOOTHING_EPOCHS = 5


def _average(weight_sets: list[list[np.ndarray]]) -> list[np.ndarray]:
    return [np.mean(np.stack(ws), axis=0).astype(ws[0].dtype) for ws in zip(*weight_sets)]


def _best_epoch_callback(val_features, val_y, patience, average_weights=False):
    import keras

    class BestEpoch(keras.callbacks.Callback):
        """Keep the weights of the epoch with the lowest validation loss averaged over the last
        SMOOTHING_EPOCHS epochs (with ``average_weights``: the mean of those epochs' weights, as stochastic
        weight averaging does); stop after ``patience`` epochs without a new best."""

        def __init__(self):
            super().__init__()
            self.best = math.inf
            self.best_epoch = 0
            self.best_weights = None
            self.recent: list[list[np.ndarray]] = []
            self.history: dict[str, list[float]] = {}

        def on_epoch_end(self, epoch, logs=None):
            logs = logs if logs is not None else {}
            probs = predict_proba(self.model, val_features)
            pred = probs.argmax(axis=1)
            val = {
                "val_loss": float(-np.mean(np.log(np.clip(probs[np.arange(len(val_y)), val_y], 1e-7, 1.0)))),
                "val_accuracy": float(np.mean(pred == val_y)),
                "val_uar": uar(val_y, pred),
            }
            logs.update(val)
            for key, value in logs.items():
                self.history.setdefault(key, []).append(float(value))
            smoothed = float(np.mean(self.history["val_loss"][-SMOOTHING_EPOCHS:]))
            self.history.setdefault("val_loss_smoothed", []).append(smoothed)
            if average_weights:
                self.recent = [*self.recent[-(SMOOTHING_EPOCHS - 1):], self.model.get_weights()]
            if smoothed < self.best:
                self.best, self.best_epoch = smoothed, epoch + 1
                self.best_weights = _average(self.recent) if average_weights else self.model.get_weights()
            elif patience is not None and epoch + 1 - self.best_epoch >= patience:
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    return BestEpoch()


def _last_epochs_callback(n: int):
    """Keeps the weights of the last ``n`` epochs (for averaging when there is no validation set)."""
    import keras

    class LastEpochs(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.recent: list[list[np.ndarray]] = []

        def on_epoch_end(self, epoch, logs=None):
            self.recent = [*self.recent[-(n - 1):], self.model.get_weights()]

    return LastEpochs()


#: Member ``i`` of an ensemble fitted apart is fitted with the fit's seed plus ``i`` times this (member 0 with the
#: fit's own seed, as a one-member model would be).
MEMBER_SEED_STEP = 1_000_003


def fit_members_apart(fit: Callable[[int, int], FitResult], join: Callable[[list], Any], members: int,
                      seed: int) -> FitResult:
    """An ensemble of ``members`` networks each fitted on its own: ``fit(seed, i)`` fits member ``i`` (a
    one-member model) with a seed of its own, so each draws its own initial weights, batches, augmentation and epoch;
    ``join(models)`` makes them one model. Fitted side by side in one model, members share every batch and
    one epoch choice; fitted apart they differ as separately trained seeds do
    (benchmarks/results/2026-12-06-members-apart.md).

    The result's learning curves are the members' means (over the epochs all of them ran); its
    ``best_epoch`` is the median of the members' (what a refit or the final fit trains every member for),
    each member's own in ``history["member_best_epochs"]``.
    """
    results = [fit(seed + MEMBER_SEED_STEP * i, i) for i in range(members)]
    shared = set.intersection(*(set(r.history) for r in results))
    history: dict[str, list] = {}
    for key in sorted(shared):
        n = min(len(r.history[key]) for r in results)
        history[key] = [float(np.mean([r.history[key][e] for r in results])) for e in range(n)]
    epochs = [r.best_epoch for r in results]
    history["member_best_epochs"] = epochs
    return FitResult(join([r.model for r in results]), history, int(np.median(epochs)),
                     sum(r.seconds for r in results))


def class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """'balanced' weights: n / (classes * count), so every class carries the same total weight."""
    counts = np.bincount(y, minlength=n_classes).astype(float)
    present = counts > 0
    weights = np.ones(n_classes)
    weights[present] = len(y) / (present.sum() * counts[present])
    return weights


def fit_model(
    build: Callable[[], Any],
    train: tuple[list[np.ndarray], np.ndarray],
    val: tuple[list[np.ndarray], np.ndarray] | None,
    *,
    n_classes: int,
    epochs: int,
    batch_size: int,
    seed: int,
    patience: int | None = None,
    balance: bool = False,
    item_weights: np.ndarray | None = None,
    augment: Callable | None = None,
    lr_schedule: str = "constant",
    average_weights: bool = False,
    sample: Callable | None = None,
    consistency: float = 0.0,
    verbose: int = 0,
) -> FitResult:
    """Fit a fresh model; with ``val``, keep the epoch that scores best on it, else train ``epochs`` epochs.

    ``lr_schedule="cosine"`` decays the optimizer's learning rate along a half cosine over ``epochs``.
    ``average_weights``: the kept model is the mean of the weights of the chosen epoch and the
    SMOOTHING_EPOCHS - 1 before it (without validation: of the last SMOOTHING_EPOCHS epochs).
    ``consistency``: each batch holds every item twice, as ``sample.pair`` gives it, and the loss adds this
    weight times the divergence between the two answers (:class:`training.models.ConsistencyLoss`).
    """
    import keras

    keras.utils.set_random_seed(seed)
    model = build()
    if consistency:
        if not hasattr(sample, "pair"):
            raise ValueError("consistency needs two views of every item: a sampler of degraded copies")
        from training.models import ConsistencyLoss

        model.compile(optimizer=model.optimizer, loss=ConsistencyLoss(model.loss, consistency),
                      metrics=["accuracy"])
    x, y = train
    onehot = np.eye(n_classes, dtype=np.float32)[y]
    if item_weights is not None:  # given per item (e.g. each corpus and each emotion in it weighted alike)
        weights = np.asarray(item_weights, dtype=np.float32)
    else:
        weights = (class_weights(y, n_classes) if balance else np.ones(n_classes))[y].astype(np.float32)
    batches = _make_batches(x, onehot, weights, batch_size=batch_size, seed=seed, augment=augment, sample=sample,
                            paired=bool(consistency))
    best = _best_epoch_callback(val[0], val[1], patience, average_weights) if val is not None else None
    callbacks = [best] if best is not None else []
    last = _last_epochs_callback(SMOOTHING_EPOCHS) if val is None and average_weights else None
    if last is not None:
        callbacks.append(last)
    if lr_schedule == "cosine":
        base = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
        callbacks.append(keras.callbacks.LearningRateScheduler(
            lambda epoch: base * 0.5 * (1 + math.cos(math.pi * epoch / epochs))))
    elif lr_schedule != "constant":
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', not {lr_schedule!r}")
    start = time.perf_counter()
    keras_history = model.fit(batches, epochs=epochs, callbacks=callbacks, verbose=verbose, shuffle=False)
    seconds = time.perf_counter() - start
    if last is not None:
        model.set_weights(_average(last.recent))
    if best is not None:
        history, best_epoch = best.history, best.best_epoch
    else:
        history = {k: [float(v) for v in vs] for k, vs in keras_history.history.items()}
        best_epoch = len(history.get("loss", [])) or epochs
    return FitResult(model, history, best_epoch, seconds)
