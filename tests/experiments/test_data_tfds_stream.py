"""The tfds training stream on the really prepared ILSVRC sample (4 shards):
exact O(1) resume and a new order every epoch."""

import hashlib
import threading

import numpy as np
import tensorflow as tf

from convnet_repro.experiments.data import make_datasets
from convnet_repro.experiments.data import tfds_stream

BATCH = 8  # 200 sample images -> 25 batches per epoch


def _kw(tfds_dir, **extra):
    kw = dict(
        batch_size=BATCH,
        source="tfds",
        tfds_data_dir=tfds_dir,
        crop_size=32,
        input_shape=(32, 32, 3),
        num_classes=1000,
        mean=None,
        seed=3,
        shuffle_chunk_files=2,  # 2 chunks of 2 shards per epoch
    )
    kw.update(extra)
    return kw


def _train(tfds_dir, **extra):
    return make_datasets("imagenet2012", **_kw(tfds_dir, **extra))[0]


def _keys(x):
    return [hashlib.sha1(image.tobytes()).hexdigest() for image in x]


def test_resume_equals_the_uninterrupted_stream(ilsvrc_tfds_dir):
    # Batches 5 (chunk 0), 14 (chunk 1), 26 and 51 (epochs 1 and 2).
    kw = dict(augment="googlenet", area_range=(0.3, 1.0))
    reference = [
        (x.numpy(), y.numpy())
        for x, y in _train(ilsvrc_tfds_dir, **kw).take(53)
    ]
    for k in (5, 14, 26, 51):
        resumed = _train(ilsvrc_tfds_dir, skip_batches=k, **kw).take(2)
        for (x, y), (x_ref, y_ref) in zip(resumed, reference[k : k + 2]):
            np.testing.assert_array_equal(y.numpy(), y_ref)
            np.testing.assert_array_equal(x.numpy(), x_ref)


def test_every_epoch_is_a_new_permutation(ilsvrc_tfds_dir):
    epochs = []
    for x, _ in _train(ilsvrc_tfds_dir).batch(25).take(4):
        epochs.append(_keys(x.numpy().reshape(-1, 32, 32, 3)))
    assert len(set(epochs[0])) == 200  # every image once per epoch
    assert all(set(e) == set(epochs[0]) for e in epochs)
    assert len({tuple(e) for e in epochs}) == 4  # new order each epoch
    # The files are regrouped too: the first chunk's images change.
    first_halves = {frozenset(e[:100]) for e in epochs}
    assert len(first_halves) > 1
    # And the order is not the files' order: positions are unrelated.
    rank0 = {key: i for i, key in enumerate(epochs[0])}
    ranks = np.array([rank0[key] for key in epochs[1]])
    assert abs(np.corrcoef(ranks, np.arange(200))[0, 1]) < 0.5


def test_resume_cost_does_not_grow_with_the_step(ilsvrc_tfds_dir, monkeypatch):
    decoded = []
    lock = threading.Lock()
    decode = tfds_stream.decode_record

    def count():
        with lock:
            decoded.append(1)
        return np.int64(0)

    def counting_decode(records, serialized):
        tick = tf.numpy_function(count, [], tf.int64)
        with tf.control_dependencies([tick]):
            return decode(records, tf.identity(serialized))

    monkeypatch.setattr(tfds_stream, "decode_record", counting_decode)
    counts = {}
    for k in (0, 60):  # 60 batches = 480 images, 2.4 epochs in
        del decoded[:]
        iterator = iter(_train(ilsvrc_tfds_dir, skip_batches=k))
        next(iterator)
        del iterator
        counts[k] = len(decoded)
    # Only what is read ahead of the first batch is decoded, whatever k;
    # `train_ds.skip(60)` decodes at least 480 first.
    assert counts[60] < 200, counts
    assert counts[60] <= counts[0] + 4 * BATCH, counts
