"""The optimizer step every model's `train_step` takes, written once."""

import tensorflow as tf


def descend(optimizer, tape, loss, variables):
    """One step of `optimizer` down the gradient of `loss`, recorded by `tape`, for `variables`.

    Under a distribution strategy each replica computes `loss` on its share of the global batch and
    the optimizer sums the replicas' gradients, so each replica's gradient is divided by the number
    of replicas: the step follows the mean over the global batch, as on one device."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    grads = tape.gradient(loss, variables)
    if replicas > 1:
        grads = [_divided(g, replicas) for g in grads]
    optimizer.apply_gradients(zip(grads, variables))


def _divided(gradient, n):
    if isinstance(gradient, tf.IndexedSlices):  # an embedding's: only the rows a batch looked up
        return tf.IndexedSlices(gradient.values / n, gradient.indices, gradient.dense_shape)
    return None if gradient is None else gradient / n
