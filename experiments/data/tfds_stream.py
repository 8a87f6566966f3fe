"""Training stream over a prepared tfds split: reshuffled every epoch,
resumable at any batch without reading or decoding what came before.

What is shuffled. Epoch `e` (seeded by `(seed, e)`):

1. the split's shard files are put in a new random order;
2. consecutive groups of `chunk_files` files of that order form chunks (so
   the grouping of files changes every epoch too);
3. the records of a chunk are read (still JPEG bytes, not decoded) and put
   in a uniformly random order with one `stateless_shuffle` of the whole
   chunk: an exact full shuffle within the chunk, i.e. a shuffle buffer as
   large as the chunk;
4. the epoch is the chunks in order, truncated to whole batches (every
   batch lies inside one epoch, as on the in-memory path).

Every example is seen once per epoch, in an order that changes every epoch,
next to examples drawn from a random `chunk_files / num_files` of the data
set. tfds writes ILSVRC-2012 train into 1,024 shards, each already a random
mix of classes (it shuffles examples by key hash when writing), so a chunk
of 8 shards (~10k images, ~1.1 GB of JPEG bytes; up to ~3 GB in memory with
the shuffled copy and the next chunk read ahead) mixes classes as a full
shuffle does, and which images meet in a batch changes every epoch: the
point of the BN paper's Sec. 4.2.1 item 6
("within-shard shuffling ... prevents the same examples from always
appearing in a mini-batch together"). A global per-epoch permutation would
need random access to records (tfds `array_record`), which the TFRecord
files tfds writes by default do not give.

Resume. Batch `k` is a pure function of `(seed, k)`: `skip_batches=k` goes
to epoch `k // batches_per_epoch` and to the chunk holding its first
example by arithmetic on the shard lengths, reads that one chunk, and drops
the records before it *before* they are decoded. Its cost is one chunk's
read whatever `k` is (`train_ds.skip(k)` decodes and augments all `k`
batches).

Considered: `tf.data` `shuffle(buffer, seed, reshuffle_each_iteration)`
over tfds' own `shuffle_files` reader: reshuffles, but its state cannot be
skipped without replaying it, so resume costs O(k); checkpointing the
iterator (`tf.train.Checkpoint(iterator=...)`) saves the whole buffer
(~1 GB) with every model checkpoint and ties the data state to one process
layout.
"""

import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


class TfdsRecords:
    """The TFRecord shards of one prepared tfds split, and their decoder.

    Args:
        files: shard file paths, in the split's order.
        counts: examples in each shard.
        features: the builder's `info.features` (decodes one record).
    """

    def __init__(self, files, counts, features):
        self.files = [str(f) for f in files]
        self.counts = np.asarray(counts, np.int64)
        self.features = features

    @classmethod
    def from_builder(cls, builder, split):
        """The shards of `split` of a prepared tfds `builder`.

        Raises:
            ValueError: the dataset was not written as TFRecord files.
        """
        file_format = getattr(builder.info, "file_format", None)
        file_format = getattr(file_format, "value", file_format)
        if file_format not in (None, "tfrecord"):
            raise ValueError(
                f"The {builder.name} training stream reads TFRecord shards; "
                f"this one was prepared as {file_format}: prepare it again "
                "with the default file_format. Received: "
                f"file_format={file_format}"
            )
        instructions = builder.info.splits[split].file_instructions
        return cls(
            [i.filename for i in instructions],
            [i.examples_in_shard for i in instructions],
            builder.info.features,
        )

    @property
    def size(self):
        return int(self.counts.sum())


def decode_record(records, serialized):
    """One serialized tfds example -> `(uint8 image, int32 label)`."""
    example = records.features.deserialize_example(serialized)
    return example["image"], tf.cast(example["label"], tf.int32)


def train_stream(
    records, batch_size, seed, skip_batches, example_fn, chunk_files=8
):
    """The infinite training stream of `records` (see the module doc).

    Args:
        records: a `TfdsRecords`.
        batch_size: examples per batch.
        seed: int seed of the file orders and shuffles.
        skip_batches: first batch of the stream (exact resume).
        example_fn: `(serialized record, seed pair) -> (x, y)`; the seed
            pair `(seed, position)` (position = the example's index in the
            stream) seeds its augmentation.
        chunk_files: shard files whose records are shuffled together.

    Returns:
        A `tf.data.Dataset` of `(x, y)` batches.
    """
    if not isinstance(chunk_files, int) or chunk_files <= 0:
        raise ValueError(
            "data.shuffle_chunk_files must be a positive int. Received: "
            f"shuffle_chunk_files={chunk_files!r}"
        )
    num_files = len(records.files)
    per_epoch = records.size // batch_size
    if per_epoch == 0:
        raise ValueError(
            f"batch_size is larger than the training set ({records.size} "
            f"examples). Received: batch_size={batch_size}"
        )
    used = per_epoch * batch_size
    num_chunks = -(-num_files // chunk_files)
    start_epoch, offset = divmod(skip_batches, per_epoch)
    files = tf.constant(records.files)
    counts = tf.constant(records.counts)
    seed = tf.constant(seed, tf.int64)

    def chunk_records(epoch, chunk, order):
        """The records of one chunk of `epoch`, shuffled, as one tensor."""
        group = order[chunk * chunk_files : (chunk + 1) * chunk_files]
        size = tf.reduce_sum(tf.gather(counts, group))
        data = (
            tf.data.TFRecordDataset(
                tf.gather(files, group), num_parallel_reads=chunk_files
            )
            .batch(size)
            .get_single_element()
        )
        perm = tf.random.experimental.stateless_shuffle(
            tf.range(size), seed=tf.stack([seed, epoch * num_chunks + chunk])
        )
        return tf.gather(data, perm)

    def epoch_examples(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(num_files, dtype=tf.int64), seed=tf.stack([seed, epoch])
        )
        ends = tf.math.cumsum(
            tf.math.segment_sum(
                tf.gather(counts, order),
                tf.range(num_files, dtype=tf.int64) // chunk_files,
            )
        )
        first = tf.where(
            epoch == start_epoch,
            tf.constant(offset * batch_size, tf.int64),
            tf.constant(0, tf.int64),
        )
        # The chunk holding example `first`, and `first`'s place in it.
        chunk0 = tf.searchsorted(
            ends, [first], side="right", out_type=tf.int64
        )[0]
        begin = tf.concat([[0], ends], 0)[chunk0]
        chunks = tf.data.Dataset.range(chunk0, num_chunks).map(
            lambda c: chunk_records(epoch, c, order)
        )
        examples = (
            chunks.prefetch(1)  # read the next chunk while this one trains
            .unbatch()
            .skip(first - begin)  # undecoded records only
            .take(used - first)
        )
        positions = tf.data.Dataset.range(
            epoch * used + first, (epoch + 1) * used
        )
        return tf.data.Dataset.zip(examples, positions)

    ds = tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch_examples)
    ds = ds.map(
        lambda record, pos: example_fn(record, tf.stack([seed, pos])),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    return ds.batch(batch_size, drop_remainder=True)
