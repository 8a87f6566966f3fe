"""Tiny generated data and a tiny MLP for the engine's own smoke tests.

The data and model of `conf/experiment/smoke.yaml` (the engine's smoke
experiment, used by the engine tests), so the engine tests do
not depend on the real data pipelines or model families. No paper.
"""

import keras
import numpy as np
import tensorflow as tf


def make_synthetic_datasets(
    input_shape=(8, 8, 1),
    num_classes=4,
    batch_size=16,
    num_train=256,
    num_val=64,
    seed=0,
    noise=3.0,
    nan_after_batches=None,
    source="local",
    local_dir=None,
    skip_batches=0,
):
    """Gaussian blobs, one mean image per class: learnable in a few steps.

    Args:
        input_shape: `(H, W, C)` of one example.
        num_classes: number of classes (and blobs).
        batch_size: examples per batch.
        num_train: training examples (shuffled with `seed`, repeated forever).
        num_val: validation examples (one finite pass).
        seed: seed of the examples and of the shuffle order.
        noise: std of the Gaussian noise around the class means (which
            have std 1 per pixel); larger is harder.
        nan_after_batches: if set, training batches after this many get
            NaN sample weights, hence a NaN loss (tests of the engine's
            divergence handling).
        source: unused (contract of `experiments.data.make_datasets`).
        local_dir: unused.
        skip_batches: first batch of the train stream (resume).

    Returns:
        `(train_ds, val_ds)`: an infinite, deterministic stream of
        `(float32 images, int32 labels)` batches, and a finite one.
    """
    del source, local_dir
    if batch_size <= 0:
        raise ValueError(
            f"batch_size must be > 0. Received: batch_size={batch_size}"
        )
    rng = np.random.default_rng(seed)
    shape = tuple(int(d) for d in input_shape)
    means = rng.normal(size=(num_classes,) + shape).astype("float32")

    def sample(n):
        y = rng.integers(0, num_classes, size=n).astype("int32")
        x = means[y] + noise * rng.normal(size=(n,) + shape).astype("float32")
        return x.astype("float32"), y

    x_train, y_train = sample(num_train)
    x_val, y_val = sample(num_val)
    train_ds = (
        tf.data.Dataset.from_tensor_slices((x_train, y_train))
        .shuffle(num_train, seed=seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(batch_size, drop_remainder=True)
    )
    if nan_after_batches is not None:
        # NaN sample weights make the loss NaN exactly from that batch on
        # (NaN *inputs* can be swallowed by ReLU on CPU).
        train_ds = train_ds.enumerate().map(
            lambda i, xy: (
                xy[0],
                xy[1],
                tf.fill(
                    [batch_size],
                    tf.where(i < nan_after_batches, 1.0, float("nan")),
                ),
            )
        )
    train_ds = train_ds.skip(skip_batches).prefetch(tf.data.AUTOTUNE)
    val_ds = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(
        batch_size
    )
    return train_ds, val_ds


def build_engine_mlp(
    input_shape=(8, 8, 1),
    num_classes=4,
    hidden_units=16,
    batch_norm=False,
    aux_head=False,
    dropout=0.0,
    name=None,
):
    """Flatten -> Dense (-> BN) -> ReLU -> Dense logits (+ optional aux head).

    Args:
        input_shape: `(H, W, C)`.
        num_classes: number of logits.
        hidden_units: width of the hidden layer.
        batch_norm: insert a `BatchNormalization` before the ReLU.
        dropout: dropout rate after the hidden layer (0 = none).
        aux_head: add a second logits output (GoogLeNet-style aux head) to
            exercise `trainer.loss_weights`.
        name: model name.

    Returns:
        A functional `keras.Model` outputting logits (a list of two when
        `aux_head`).
    """
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    x = keras.layers.Dense(
        hidden_units, use_bias=not batch_norm, name="hidden_dense"
    )(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(name="hidden_bn")(x)
    x = keras.layers.ReLU(name="hidden_relu")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    if aux_head:
        aux = keras.layers.Dense(num_classes, name="aux_logits")(x)
        outputs = [outputs, aux]
    return keras.Model(inputs, outputs, name=name or "engine_mlp")
