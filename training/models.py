"""Model builders: each a short function returning a compiled Keras model, hyper-parameters as arguments.

Select one by name with ``--model``; the builder gets the feature shape and the number of classes, and
any ``--model-arg key=value`` overrides.
"""

from __future__ import annotations

from typing import Callable

import keras
from keras import layers, ops


def build_notebook(
    input_shape: tuple[int | None, int],
    n_classes: int,
    *,
    lstm_units: int = 128,
    dense_units: tuple[int, ...] = (128, 64),
    dropout: float = 0.2,
    learning_rate: float = 1e-3,
) -> keras.Model:
    """The notebook's model: LSTM(128) over the 40 averaged MFCCs, Dense(ReLU) with Dropout, softmax.

    Categorical cross-entropy, Adam, accuracy, as in the notebook.
    """
    model = keras.Sequential(name="seed_lstm")
    model.add(keras.Input(shape=input_shape, name="features"))
    model.add(layers.LSTM(lstm_units))
    model.add(layers.Dropout(dropout))
    for units in dense_units:
        model.add(layers.Dense(units, activation="relu"))
        model.add(layers.Dropout(dropout))
    model.add(layers.Dense(n_classes, activation="softmax", name="probabilities"))
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


# --------------------------------------------------------------------------- frame-sequence model
# Inputs are zero-padded at the end to the longest item of a batch (speech_emotion.features.pad_batch). The
# layers below carry a frame mask explicitly, so that padding never changes an item's prediction: a clip
# batched with a longer one gets the probabilities it gets alone.


@keras.saving.register_keras_serializable(package="ser")
class FrameMask(layers.Layer):
    """1.0 for real frames, 0.0 for padding: a frame is padding when every feature in it is exactly 0.

    Features are normalised per utterance, so a real frame is never all zeros.
    """

    def call(self, x):
        return ops.cast(ops.any(ops.not_equal(x, 0.0), axis=-1), x.dtype)


@keras.saving.register_keras_serializable(package="ser")
class ApplyMask(layers.Layer):
    """Zero the padded frames again (after BatchNorm's shift they are not zero any more)."""

    def call(self, x, frame_mask):
        for _ in range(len(x.shape) - 2):  # (batch, frames) against (batch, frames, ...)
            frame_mask = ops.expand_dims(frame_mask, -1)
        return x * frame_mask


@keras.saving.register_keras_serializable(package="ser")
class PoolMask(layers.Layer):
    """The mask after MaxPooling1D(pool): a pooled frame is real when all frames it covers are."""

    def __init__(self, pool: int, **kwargs):
        super().__init__(**kwargs)
        self.pool = pool

    def call(self, mask):
        pooled = -ops.max_pool(-ops.expand_dims(mask, -1), pool_size=self.pool, strides=self.pool, padding="valid")
        return ops.squeeze(pooled, -1)

    def get_config(self):
        return {**super().get_config(), "pool": self.pool}


class _TimePooling(layers.Layer):
    """Pools over time with the explicit frame mask; takes the LSTM's Keras mask and returns none."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def compute_mask(self, x, mask=None):
        return None


@keras.saving.register_keras_serializable(package="ser")
class MaskedAttentionPooling(_TimePooling):
    """Weighted mean over real frames, weights from a learned score per frame (softmax over time)."""

    def __init__(self, units: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.hidden = layers.Dense(units, activation="tanh")
        self.score = layers.Dense(1)

    def build(self, input_shape):
        self.hidden.build(input_shape)
        self.score.build((*input_shape[:-1], self.units))

    def call(self, x, frame_mask):
        scores = ops.squeeze(self.score(self.hidden(x)), -1)
        scores = ops.where(frame_mask > 0, scores, ops.full_like(scores, -1e9))
        weights = ops.expand_dims(ops.softmax(scores, axis=-1), -1)
        return ops.sum(weights * x, axis=1)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="ser")
class MaskedStatsPooling(_TimePooling):
    """Mean and standard deviation over the real frames (statistics pooling, as in x-vectors)."""

    def call(self, x, frame_mask):
        m = ops.expand_dims(frame_mask, -1)
        count = ops.maximum(ops.sum(m, axis=1), 1.0)
        mean = ops.sum(x * m, axis=1) / count
        var = ops.sum(ops.square(x - ops.expand_dims(mean, 1)) * m, axis=1) / count
        return ops.concatenate([mean, ops.sqrt(var + 1e-6)], axis=-1)


def _crnn_branch(
    features,
    mask,
    n_classes: int,
    *,
    prefix: str = "",
    conv_filters: tuple[int, ...] = (96, 128),
    kernel_size: int = 5,
    pool: int = 4,
    lstm_units: int = 64,
    attention_units: int = 64,
    dense_units: int = 64,
    dropout: float = 0.3,
    stats_pooling: bool = True,
):
    """The layers of :func:`build_crnn` from its input frames and their frame mask to its probabilities."""
    x = layers.SpatialDropout1D(0.1)(features)
    for i, filters in enumerate(conv_filters):
        x = layers.Conv1D(filters, kernel_size, padding="same", use_bias=False, name=f"{prefix}conv{i}")(x)
        x = layers.BatchNormalization(name=f"{prefix}bn{i}")(x)
        x = layers.Activation("relu")(x)
        x = layers.MaxPooling1D(pool, name=f"{prefix}pool{i}")(x)
        mask = PoolMask(pool)(mask)
        # Padded frames are not zero after BatchNorm; zero them before the next convolution reads them.
        x = ApplyMask()(x, mask)
    x = layers.Dropout(dropout)(x)
    x = layers.Bidirectional(layers.LSTM(lstm_units, return_sequences=True), name=f"{prefix}bilstm")(
        x, mask=ops.cast(mask, "bool"))
    pooled = MaskedAttentionPooling(attention_units, name=f"{prefix}attention")(x, mask)
    if stats_pooling:
        pooled = layers.Concatenate()([pooled, MaskedStatsPooling(name=f"{prefix}statistics")(x, mask)])
    x = layers.Dropout(dropout)(pooled)
    x = layers.Dense(dense_units, activation="relu")(x)
    x = layers.Dropout(dropout)(x)
    return layers.Dense(n_classes, activation="softmax", name=f"{prefix}probabilities")(x)


def build_crnn(
    input_shape: tuple[int | None, int],
    n_classes: int,
    *,
    label_smoothing: float = 0.1,
    learning_rate: float = 2e-3,
    **branch_args,
) -> keras.Model:
    """Conv front-end (downsamples time by ``pool`` per block) -> BiLSTM over time -> attention and
    statistics pooling -> softmax.

    With the defaults, the LSTM steps every 160 ms (10 ms frames pooled by 4, twice). Takes
    ``(batch, frames, dims)`` of any length: every block re-applies the padding mask, the LSTM skips
    padded steps and both poolings ignore them. ``branch_args``: the sizes of :func:`_crnn_branch`.
    """
    features = keras.Input(shape=(None, input_shape[-1]), name="features")
    mask = FrameMask(name="frame_mask")(features)
    outputs = _crnn_branch(features, mask, n_classes, **branch_args)
    model = keras.Model(features, outputs, name="crnn")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"],
    )
    return model


# --------------------------------------------------------------------------- an ensemble in one model
# Averaging the probabilities of independently trained models is the most reliable gain there is for a
# model that one seed decides this much about (benchmarks/README.md). crnn_ensemble trains its members side
# by side in one Keras model, each on its own loss, and exports as one SavedModel: one call serves all.


@keras.saving.register_keras_serializable(package="ser")
class MemberMean(layers.Layer):
    """The ensemble's answer: the mean of the members' probabilities.

    In training it returns, instead, the members' unnormalised geometric mean: with
    :class:`MemberCrossentropy` (cross-entropy without renormalising) the loss is then exactly the mean of
    each member's own cross-entropy, so every member learns to answer alone, as independently trained
    ensemble members do, rather than to patch the others' errors.
    """

    def call(self, members, training=None):
        stacked = ops.stack(members, axis=0)
        if training:
            return ops.exp(ops.mean(ops.log(ops.clip(stacked, 1e-7, 1.0)), axis=0))
        return ops.mean(stacked, axis=0)


@keras.saving.register_keras_serializable(package="ser")
class MemberCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy (with label smoothing) of ``y_pred`` as given, not renormalised to sum 1."""

    def __init__(self, label_smoothing: float = 0.0, name: str = "member_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        n = ops.cast(ops.shape(y_true)[-1], y_pred.dtype)
        y_true = ops.cast(y_true, y_pred.dtype) * (1 - self.label_smoothing) + self.label_smoothing / n
        return -ops.sum(y_true * ops.log(ops.clip(y_pred, 1e-7, 1.0)), axis=-1)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="ser")
class ConsistencyLoss(keras.losses.Loss):
    """``base`` per item, plus ``weight`` times the Jensen-Shannon divergence between the answers to the two
    views of each item: a batch of ``2n`` rows holds ``n`` items, then the same ``n`` items seen another way
    (``training.fitting`` with ``consistency``). Each row carries its pair's divergence, so the item's sample
    weight weighs it as it weighs the item's cross-entropy. ``y_pred`` is renormalised first (an ensemble's
    training output, :class:`MemberMean`, is a geometric mean that does not sum to 1)."""

    def __init__(self, base, weight: float = 1.0, name: str = "consistency", **kwargs):
        super().__init__(name=name, **kwargs)
        self.base = keras.losses.get(base) if isinstance(base, (dict, str)) else base
        self.weight = weight

    def call(self, y_true, y_pred):
        per_item = self.base.call(y_true, y_pred)
        p = ops.clip(y_pred, 1e-7, 1.0)
        p = p / ops.sum(p, axis=-1, keepdims=True)
        n = ops.shape(p)[0] // 2
        a, b = p[:n], p[n:]
        log_m = ops.log((a + b) / 2)
        jsd = 0.5 * ops.sum(a * (ops.log(a) - log_m), axis=-1) + 0.5 * ops.sum(b * (ops.log(b) - log_m), axis=-1)
        return per_item + self.weight * ops.concatenate([jsd, jsd], axis=0)

    def get_config(self):
        return {**super().get_config(), "base": keras.losses.serialize(self.base), "weight": self.weight}


def build_crnn_ensemble(
    input_shape: tuple[int | None, int],
    n_classes: int,
    *,
    members: int = 2,
    label_smoothing: float = 0.1,
    learning_rate: float = 2e-3,
    **branch_args,
) -> keras.Model:
    """``members`` :func:`build_crnn` networks over the same frames (layers ``member0_conv0`` ...), each with
    its own initial weights and dropout, answering the mean of their probabilities (:class:`MemberMean`).

    They see the same batches and are trained together, but each on its own cross-entropy: the members of
    an ensemble for the price of one training loop, and one model call at serving time.
    """
    if members < 1:
        raise ValueError(f"an ensemble needs at least one member, not {members}")
    features = keras.Input(shape=(None, input_shape[-1]), name="features")
    mask = FrameMask(name="frame_mask")(features)
    outputs = MemberMean(name="probabilities")(
        [_crnn_branch(features, mask, n_classes, prefix=f"member{i}_", **branch_args)
         for i in range(members)])
    model = keras.Model(features, outputs, name="crnn_ensemble")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=MemberCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"],
    )
    return model


def join_members(ensemble: keras.Model, members: list[keras.Model]) -> keras.Model:
    """``ensemble`` (:func:`build_crnn_ensemble` of ``len(members)`` members) with member ``i``'s weights set
    to those of ``members[i]``, each a one-member ensemble fitted on its own: then it answers the mean of
    their probabilities, as a seed ensemble of separately trained models does, in one model call.

    Member ``i``'s layers are those its probabilities are computed from (layer names cannot say: a member's
    hidden Dense has Keras's automatic name, which earlier exports' variables carry), in the same order as in
    a one-member model built the same way."""
    unset = {id(layer) for layer in ensemble.layers if layer.weights}
    for i, member in enumerate(members):
        try:
            head = ensemble.get_layer(f"member{i}_probabilities")
        except ValueError:
            raise ValueError(f"the ensemble has fewer members than the {len(members)} given") from None
        branch = keras.Model(ensemble.inputs, head.output)
        targets = [layer for layer in branch.layers if layer.weights]
        sources = [layer for layer in member.layers if layer.weights]
        if [[tuple(w.shape) for w in t.weights] for t in targets] != [[tuple(w.shape) for w in s.weights]
                                                                        for s in sources]:
            raise ValueError(f"member {i} is not a one-member model of the ensemble's kind and sizes")
        for target, source in zip(targets, sources):
            target.set_weights(source.get_weights())
            unset.discard(id(target))
    if unset:
        names = sorted(layer.name for layer in ensemble.layers if id(layer) in unset)
        raise ValueError(f"{len(members)} members leave layers of the ensemble unset: {', '.join(names)}")
    return ensemble


MODEL_BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "notebook": build_notebook,
    "crnn": build_crnn,
    "crnn_ensemble": build_crnn_ensemble,
}
