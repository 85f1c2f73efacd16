"""Model builders: each a short function returning a compiled Keras model, hyper-parameters as arguments.

Select one by name with ``--model``; the builder gets the feature shape and the number of classes, and
any ``--model-arg key=value`` overrides.
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np
from keras import layers, ops

from speech_emotion.features import envelope_matrix


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


@keras.saving.register_keras_serializable(package="ser")
class SplitMel(layers.Layer):
    """Each frame's first ``n_mels`` columns (the log-mel) and the rest (the pitch track), as two tensors."""

    def __init__(self, n_mels: int, **kwargs):
        super().__init__(**kwargs)
        self.n_mels = n_mels

    def call(self, x):
        return x[:, :, : self.n_mels], x[:, :, self.n_mels:]

    def get_config(self):
        return {**super().get_config(), "n_mels": self.n_mels}


@keras.saving.register_keras_serializable(package="ser")
class Envelope(layers.Layer):
    """Each frame's first ``n_mels`` columns (the log-mel) cut to their first ``lifter`` cepstral
    coefficients, the rest (pitch) as it is: the features' ``lifter`` setting inside one network, so that
    one member of an ensemble can read the envelope while another reads the harmonics too."""

    def __init__(self, n_mels: int, lifter: int, **kwargs):
        super().__init__(**kwargs)
        self.n_mels, self.lifter = n_mels, lifter
        # frames are rows here: x @ M.T applies the matrix to each frame's bins
        self._matrix = np.ascontiguousarray(envelope_matrix(n_mels, lifter).T, dtype=np.float32)

    def call(self, x):
        mel = ops.matmul(x[:, :, : self.n_mels], ops.convert_to_tensor(self._matrix, dtype=x.dtype))
        return ops.concatenate([mel, x[:, :, self.n_mels:]], axis=-1)

    def get_config(self):
        return {**super().get_config(), "n_mels": self.n_mels, "lifter": self.lifter}


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
    freq_filters: tuple[int, ...] = (),
    freq_pools: tuple[int, ...] = (),
    n_mels: int = 64,
    lifter: int = 0,
):
    """The layers of :func:`build_crnn` from its input frames and their frame mask to its probabilities.

    ``freq_filters``: first read the log-mel (the first ``n_mels`` columns) as an image, with 3 x 3
    convolutions over time and frequency, each followed by max-pooling over frequency by ``freq_pools``
    (time keeps its resolution); the maps, flattened per frame, and the remaining columns (pitch) go on to
    the convolutions over time. A formant or harmonic that another voice puts a few bands higher or lower
    then lights the same filters: what frequency warping in training teaches the model otherwise.

    ``lifter``: read the log-mel's envelope only (:class:`Envelope`), not its harmonics.
    """
    x = Envelope(n_mels, lifter, name=f"{prefix}envelope")(features) if lifter else features
    x = layers.SpatialDropout1D(0.1)(x)
    if freq_filters:
        mel, rest = SplitMel(n_mels)(x)
        plane = layers.Reshape((-1, n_mels, 1))(mel)
        for i, (filters, pool) in enumerate(zip(freq_filters, freq_pools, strict=True)):
            plane = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{prefix}fconv{i}")(plane)
            plane = layers.BatchNormalization(name=f"{prefix}fbn{i}")(plane)
            plane = layers.Activation("relu")(plane)
            plane = layers.MaxPooling2D((1, pool), name=f"{prefix}fpool{i}")(plane)
            plane = ApplyMask()(plane, mask)
        x = layers.Concatenate()([layers.Reshape((-1, plane.shape[2] * plane.shape[3]))(plane), rest])
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


def build_crnn_ensemble(
    input_shape: tuple[int | None, int],
    n_classes: int,
    *,
    members: int = 2,
    member_args: list[dict] | None = None,
    label_smoothing: float = 0.1,
    learning_rate: float = 2e-3,
    **branch_args,
) -> keras.Model:
    """``members`` :func:`build_crnn` networks over the same frames (layers ``member0_conv0`` ...), each with
    its own initial weights and dropout, answering the mean of their probabilities (:class:`MemberMean`).
    ``member_args``: one dict per member of :func:`_crnn_branch` arguments that member has instead of
    ``branch_args`` (e.g. ``[{}, {"lifter": 12}]``: the second member reads the spectral envelope only).

    They see the same batches and are trained together, but each on its own cross-entropy: the members of
    an ensemble for the price of one training loop, and one model call at serving time.
    """
    if members < 1:
        raise ValueError(f"an ensemble needs at least one member, not {members}")
    member_args = list(member_args or [{}] * members)
    if len(member_args) != members:
        raise ValueError(f"member_args has {len(member_args)} entries for {members} members")
    features = keras.Input(shape=(None, input_shape[-1]), name="features")
    mask = FrameMask(name="frame_mask")(features)
    outputs = MemberMean(name="probabilities")(
        [_crnn_branch(features, mask, n_classes, prefix=f"member{i}_", **{**branch_args, **member_args[i]})
         for i in range(members)])
    model = keras.Model(features, outputs, name="crnn_ensemble")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=MemberCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"],
    )
    return model


def check_bands(model_args: dict, n_mels: int | None) -> None:
    """Options that read the log-mel as bands (``freq_filters``, ``lifter``, also per member) take its width
    from ``n_mels``, which the features decide: a model that read other columns as bands would train
    without an error and mean nothing, so the two must agree, written out."""
    wanted = [model_args, *(model_args.get("member_args") or [])]
    if any(args.get("freq_filters") or args.get("lifter") for args in wanted) and model_args.get("n_mels") != n_mels:
        raise ValueError(f"model_args reads log-mel bands (freq_filters or lifter): give it the features' n_mels "
                         f"({n_mels}), not {model_args.get('n_mels')}")


MODEL_BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "notebook": build_notebook,
    "crnn": build_crnn,
    "crnn_ensemble": build_crnn_ensemble,
}
