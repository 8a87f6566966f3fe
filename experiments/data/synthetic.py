"""Generates small, learnable classification data (engine tests, smoke).

Not from any paper; both train in seconds on a CPU:

- `make_synthetic`: uint8 images (a fixed 4x4-block template per class +
  noise), the `synthetic` dataset of `make_datasets` (`conf/data/`), which
  then goes through the real pipeline (augmentation, resume, views).
- `make_blob_datasets`: float32 Gaussian blobs straight into `tf.data`,
  bypassing the real pipeline, with an injected NaN loss on request: the
  data of `conf/experiment/smoke.yaml` (the engine's own smoke run and
  tests of the engine, e.g. divergence handling).
"""

import numpy as np
import tensorflow as tf


def make_synthetic(
    num_examples, input_shape=(16, 16, 1), num_classes=4, noise=0.25, seed=0
):
    """Generates a small, learnable classification set of uint8 images.

    Each class has a fixed random template of 4x4-pixel blocks (drawn from
    `seed`, independent of the training order seed); an example is its class
    template plus Gaussian noise of std `noise` (in [0, 1] units), clipped
    and stored as uint8. A linear model separates the classes easily.

    Args:
        num_examples: number of images.
        input_shape: `(H, W, C)`.
        num_classes: number of classes (labels `0..num_classes-1`, balanced).
        noise: noise standard deviation in [0, 1] pixel units.
        seed: data seed; the `split` seed offset keeps train/val disjoint.

    Returns:
        `(images uint8 (N, H, W, C), labels int32 (N,))`.
    """
    h, w, c = (int(d) for d in input_shape)
    template_rng = np.random.default_rng(12345)  # classes never change
    blocks = template_rng.random((num_classes, -(-h // 4), -(-w // 4), c))
    templates = blocks.repeat(4, axis=1).repeat(4, axis=2)[:, :h, :w, :]
    rng = np.random.default_rng(seed)
    labels = (np.arange(num_examples) % num_classes).astype(np.int32)
    rng.shuffle(labels)
    images = templates[labels] + noise * rng.standard_normal(
        (num_examples, h, w, c)
    )
    images = np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)
    return images, labels


def make_blob_datasets(
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
        source: unused (the `data.source` key every data config has).
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
