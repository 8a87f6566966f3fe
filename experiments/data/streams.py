"""The batched `tf.data` streams of one split: infinite train, finite val.

Batch `k` of the train stream is a pure function of `(seed, k)` (see
`experiments.data.pipeline`), so a stream can start at any batch without
reading the ones before it.
"""

import tensorflow as tf

from convnet_repro.experiments.data import tfds_stream
from convnet_repro.experiments.data.splits import decode_image
from convnet_repro.experiments.data.splits import square_image

AUTOTUNE = tf.data.AUTOTUNE


def _options():
    options = tf.data.Options()
    options.deterministic = True
    return options


def train_stream(
    split,
    batch_size,
    seed,
    skip_batches,
    example_fn,
    batch_fn,
    per_example,
    decode_size,
    chunk_files,
):
    if split.kind == "records":

        def one(record, seed_pair):
            image, label = tfds_stream.decode_record(split.records, record)
            return example_fn(
                square_image(image, decode_size), seed_pair
            ), label

        ds = tfds_stream.train_stream(
            split.records, batch_size, seed, skip_batches, one, chunk_files
        )
        return ds.prefetch(AUTOTUNE).with_options(_options())
    n = split.size
    per_epoch = n // batch_size
    if per_epoch == 0:
        raise ValueError(
            f"batch_size is larger than the training set ({n} examples). "
            f"Received: batch_size={batch_size}"
        )
    start_epoch, offset = divmod(skip_batches, per_epoch)
    seed = tf.constant(seed, tf.int64)
    used = per_epoch * batch_size

    def epoch_batches(epoch):
        perm = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.stack([seed, epoch])
        )
        perm = tf.reshape(perm[:used], (per_epoch, batch_size))
        first = tf.where(
            epoch == start_epoch,
            tf.constant(offset, tf.int64),
            tf.constant(0, tf.int64),
        )
        steps = tf.range(first, per_epoch, dtype=tf.int64)
        positions = (
            epoch * used
            + steps[:, None] * batch_size
            + tf.range(batch_size, dtype=tf.int64)[None, :]
        )
        return tf.data.Dataset.from_tensor_slices((perm[first:], positions))

    ds = tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch_batches)
    labels = tf.constant(split.labels, tf.int32)
    if split.kind == "array":
        images = tf.constant(split.images)
    else:
        images = tf.constant(split.paths)
    if not per_example:
        ds = ds.map(
            lambda idx, pos: (
                batch_fn(tf.gather(images, idx)),
                tf.gather(labels, idx),
            ),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
    else:

        def one(idx, pos):
            x = tf.gather(images, idx)
            if split.kind == "files":
                x = decode_image(x, decode_size)
            return example_fn(x, tf.stack([seed, pos])), tf.gather(labels, idx)

        ds = (
            ds.unbatch()
            .map(one, num_parallel_calls=AUTOTUNE, deterministic=True)
            .batch(batch_size, drop_remainder=True)
        )
    return ds.prefetch(AUTOTUNE).with_options(_options())


def val_stream(split, batch_size, batch_fn, example_fn, decode_size):
    if split.kind == "array":
        ds = tf.data.Dataset.from_tensor_slices(
            (split.images, split.labels)
        ).batch(batch_size)
        ds = ds.map(
            lambda x, y: (batch_fn(x), y),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
    else:
        if split.kind == "files":
            ds = tf.data.Dataset.from_tensor_slices((split.paths, split.labels))
            load = decode_image
        else:
            ds = split.stream
            load = square_image

        def one(x, y):
            return example_fn(load(x, decode_size)), tf.cast(y, tf.int32)

        ds = ds.map(one, num_parallel_calls=AUTOTUNE, deterministic=True)
        ds = ds.batch(batch_size)
    return ds.prefetch(AUTOTUNE).with_options(_options())


def check_spec(ds, input_shape, name):
    if input_shape is None:
        return
    shape = tuple(ds.element_spec[0].shape[1:])
    expected = tuple(int(d) for d in input_shape)
    if len(shape) != len(expected) or any(
        s is not None and s != e for s, e in zip(shape, expected)
    ):
        raise ValueError(
            f"{name} pipeline yields images of shape {shape} but "
            f"data.input_shape={list(expected)}; fix input_shape (or "
            f"crop_size/flatten). Received: input_shape={list(expected)}"
        )
