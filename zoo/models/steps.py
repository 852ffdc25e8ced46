"""The optimizer step every model's `train_step` takes, written once, and the random draws of a
step (its own and its Dropout layers'), the same on any number of replicas."""

import keras
import tensorflow as tf


def descend(optimizer, tape, loss, variables):
    """One step of `optimizer` down the gradient of `loss`, recorded by `tape`, for `variables`.

    Under a distribution strategy each replica computes `loss` on its share of the global batch and
    the optimizer sums the replicas' gradients, so each replica's gradient is divided by the number
    of replicas: the step follows the mean over the global batch, as on one device. Keras clips each
    replica's gradient before that sum; an optimizer that clips (clipnorm, global_clipnorm, clipvalue)
    therefore gets the global batch's mean gradient, summed here first and clipped as one device
    clips it, then shared out again. It clips an embedding's whole gradient (Keras alone would take
    the norm of the rows each lookup gave, which depends on how the batch was split)."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    grads = tape.gradient(loss, variables)
    clips = optimizer.clipnorm or optimizer.global_clipnorm or optimizer.clipvalue
    if clips:  # an embedding's gradient as a whole: Keras would take the norm of its looked-up rows
        grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
    if replicas > 1:
        grads = [_divided(g, replicas) for g in grads]
        if clips:
            present = [i for i, g in enumerate(grads) if g is not None]
            summed = tf.distribute.get_replica_context().all_reduce("SUM", [grads[i] for i in present])
            clipped = optimizer._clip_gradients(summed)  # Keras's own clipping, on the global mean
            for i, g in zip(present, clipped):  # within the clip: the optimizer's clipping changes nothing
                grads[i] = _divided(g, replicas)
    optimizer.apply_gradients(zip(grads, variables))


def _divided(gradient, n):
    if isinstance(gradient, tf.IndexedSlices):  # an embedding's: only the rows a batch looked up
        return tf.IndexedSlices(gradient.values / n, gradient.indices, gradient.dense_shape)
    return None if gradient is None else gradient / n


SITES = 8  # random draws one train_step may make: a draw's seed holds step * SITES + its site
VALIDATION_STEP = -1  # the step of test_step's draws: one no training takes, so every epoch validates alike


def random_rows(sample, rows, step, site: int):
    """This replica's `rows` rows of random values, as one process draws them for the whole batch.

    `sample(n, seed)` draws values for n examples from a stateless seed (tf.random.stateless_*). The
    seed is the run's seed (keras.utils.set_random_seed), the optimizer's step count `step` and `site`
    (which of the step's draws this is, below SITES). Under a strategy of R replicas each replica
    draws for all R * rows examples and keeps its own rows, so R workers together use the noise one
    process would, not R copies of one; a resumed run draws what an uninterrupted one would have."""
    run_seed = tf.compat.v1.random.get_seed(None)[0] or 0
    seed = tf.stack([tf.constant(run_seed, tf.int64), tf.cast(step, tf.int64) * SITES + site])
    context, replicas = _replicas()
    if replicas == 1:
        return sample(rows, seed)
    return _own_rows(sample(rows * replicas, seed), rows, context)


def _replicas():
    """(the replica context or None, the number of replicas in sync): 1 outside any strategy."""
    context = tf.distribute.get_replica_context()
    return context, context.num_replicas_in_sync if context is not None else 1


def _own_rows(values, rows, context):
    """This replica's `rows` rows of values drawn for the whole global batch."""
    first = tf.cast(context.replica_id_in_sync_group, tf.int32) * rows
    return values[first : first + rows]


def global_mean(total, count):
    """A mean whose rows weigh unequally (real samples, frames): `total / count`, both sums over this
    replica's rows, as this replica's share of the global batch's mean. Returns (share, weight).

    `descend` averages the replicas' gradients, and the shares average to sum(total) / sum(count) over
    every replica, as on one device; the replicas' own means would weigh a replica with few real rows
    as much as one with many. `weight` (the count each replica stands for) is the sample weight that
    makes a keras.metrics.Mean of the shares that same mean. With one replica: (total / count, count)."""
    context, replicas = _replicas()
    if replicas > 1:
        count = context.all_reduce("SUM", count) / replicas
    return total / tf.maximum(count, 1.0 / replicas), count


@keras.saving.register_keras_serializable(package="zoo")
class Dropout(keras.layers.Dropout):
    """keras.layers.Dropout whose masks under a distribution strategy are those one process draws.

    Keras's own draws each replica's mask from the seed generator every worker holds a copy of, so
    every worker drops the same units of its first row, its second, and so on. This one draws the
    mask of the whole global batch (as one process does, from the same seed) and keeps its rows.
    In one process it is Keras's."""

    def call(self, inputs, training=False):
        context, replicas = _replicas()
        if replicas == 1 or not training or self.rate == 0 or self.noise_shape is not None:
            return super().call(inputs, training=training)
        rows = tf.shape(inputs)[0]
        ones = tf.ones(tf.concat([[rows * replicas], tf.shape(inputs)[1:]], 0), inputs.dtype)
        mask = keras.random.dropout(ones, self.rate, seed=self.seed_generator)  # 0 or 1 / (1 - rate)
        return inputs * _own_rows(mask, rows, context)
