"""The exported serving graph's fused recurrence: the same function as the Keras layers, in fewer ops.

Keras runs an LSTM on the CPU as a graph loop, one iteration (a dozen small ops, each with its own
dispatch cost) per time step, twice for a bidirectional layer and once more per ensemble member; for a
3-second clip that loop, not arithmetic, is most of the model call. TensorFlow's ``BlockLSTMV2`` op runs a
whole sequence in one C++ kernel with the same gate layout (input, forget, cell, output) and activations
as Keras' LSTM, so :func:`fused_recurrence` swaps it in while the export traces the serving signature.

The swap changes how the function is computed, not which function: training and the Keras model keep
Keras' layers, and training/export.py checks the written SavedModel against the Keras model before it
moves the export into place. Where the fused form would not compute the same function (a mask that is not
a run of real frames followed by padding, which the service's zero-padded batches never produce), the
graph takes Keras' own loop instead.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import keras

log = logging.getLogger(__name__)


def _fusable(layer) -> bool:
    """A Bidirectional LSTM whose function BlockLSTMV2 computes exactly."""
    if not isinstance(layer, keras.layers.Bidirectional) or layer.merge_mode != "concat":
        return False
    forward, backward = layer.forward_layer, layer.backward_layer
    return all(
        isinstance(rnn, keras.layers.LSTM) and rnn.return_sequences and not rnn.stateful
        and rnn.cell.use_bias and rnn.cell.activation is keras.activations.tanh
        and rnn.cell.recurrent_activation is keras.activations.sigmoid
        for rnn in (forward, backward)
    ) and not forward.go_backwards and backward.go_backwards


def _block_lstm(x, lengths, cell, *, reverse: bool):
    """``(batch, steps, dims)`` -> ``(batch, steps, units)``: one LSTM over each sequence's first ``lengths``
    steps (backwards when ``reverse``), as one ``BlockLSTMV2`` call; later steps' outputs are not used."""
    import tensorflow as tf

    if reverse:  # each sequence reversed within its own length, so the padding stays at the end
        x = tf.reverse_sequence(x, lengths, seq_axis=1, batch_axis=0)
    zeros = tf.zeros([tf.shape(x)[0], cell.units], x.dtype)
    no_peephole = tf.zeros([cell.units], x.dtype)
    outputs = tf.raw_ops.BlockLSTMV2(
        seq_len_max=tf.cast(tf.shape(x)[1], tf.int64), x=tf.transpose(x, [1, 0, 2]), cs_prev=zeros,
        h_prev=zeros, w=tf.concat([cell.kernel, cell.recurrent_kernel], axis=0), wci=no_peephole,
        wcf=no_peephole, wco=no_peephole, b=cell.bias, cell_clip=0.0, use_peephole=False)
    h = tf.transpose(outputs[6], [1, 0, 2])
    return tf.reverse_sequence(h, lengths, seq_axis=1, batch_axis=0) if reverse else h


def _fused_call(layer, keras_call):
    import tensorflow as tf

    def call(sequences, initial_state=None, mask=None, training=None):
        if initial_state is not None:
            return keras_call(sequences, initial_state=initial_state, mask=mask, training=training)
        steps = tf.shape(sequences)[1]
        if mask is None:
            mask = tf.ones(tf.shape(sequences)[:2], tf.bool)
        mask = tf.cast(mask, tf.bool)
        lengths = tf.reduce_sum(tf.cast(mask, tf.int64), axis=1)
        prefix = tf.sequence_mask(lengths, steps)

        def fused():
            both = tf.concat([_block_lstm(sequences, lengths, layer.forward_layer.cell, reverse=False),
                              _block_lstm(sequences, lengths, layer.backward_layer.cell, reverse=True)], axis=-1)
            return both * tf.cast(prefix, both.dtype)[..., None]  # Keras' masked steps output zeros

        return tf.cond(tf.reduce_all(tf.equal(mask, prefix)), fused,
                       lambda: keras_call(sequences, mask=mask, training=training))

    return call


@contextlib.contextmanager
def fused_recurrence(model) -> Iterator[int]:
    """While open, every bidirectional LSTM of ``model`` that :func:`_fusable` accepts is called in its fused
    form (for tracing the serving signature); yields how many layers that is."""
    swapped = [layer for layer in model.layers if _fusable(layer)]
    for layer in swapped:
        layer.call = _fused_call(layer, layer.call)
    try:
        yield len(swapped)
    finally:
        for layer in swapped:
            del layer.call
