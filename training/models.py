"""Model builders: each a short function returning a compiled Keras model, hyper-parameters as arguments.

Select one by name with ``--model``; the builder gets the feature shape and the number of classes, and
any ``--model-arg key=value`` overrides.
"""

from __future__ import annotations

from typing import Callable

import keras
from keras import layers


def build_seed(
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


MODEL_BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "seed": build_seed,
}
