"""Find a dataset and load its two splits: arrays, image files or records.

`load` finds the data offline (IDX/CIFAR arrays, ILSVRC-style image
folders, the generated `synthetic` set) or through tensorflow-datasets,
failing fast with a one-line fix when it is missing; `subset` keeps a fixed
subset; `materialize` decodes an image folder into one uint8 array (kept
per process, optionally as `.npy` files). tf.data's `Dataset.cache(filename)`
/ `Dataset.save` were considered for that cache and do not fit: the train
stream gathers batches by index from one in-memory array (O(1) exact
resume, `experiments.data.pipeline`), which a cached *stream* cannot give.
"""

import hashlib
import os

import numpy as np
import tensorflow as tf

from convnet_repro.experiments.data import augment as aug
from convnet_repro.experiments.data import cifar10
from convnet_repro.experiments.data import data_root
from convnet_repro.experiments.data import idx_format
from convnet_repro.experiments.data import ilsvrc_sample
from convnet_repro.experiments.data import image_folder
from convnet_repro.experiments.data import synthetic
from convnet_repro.experiments.data import tfds_stream
from convnet_repro.experiments.engine.exit_codes import DataError
from convnet_repro.experiments.engine.exit_codes import MissingDataError

AUTOTUNE = tf.data.AUTOTUNE

# name -> (kind of offline source, tfds name, tfds train split, val split)
DATASETS = {
    "synthetic": ("synthetic", None, None, None),
    "mnist": ("idx", "mnist", "train", "test"),
    "fashion_mnist": ("idx", "fashion_mnist", "train", "test"),
    "cifar10": ("cifar10", "cifar10", "train", "test"),
    "imagenette": ("folder", "imagenette/full-size-v2", "train", "validation"),
    "imagenet2012": ("folder", "imagenet2012", "train", "validation"),
    # ImageNet Fall 2011 / -21k: a local image-folder copy only (no tfds).
    "imagenet21k": ("folder", None, "train", "val"),
}
# Offline kinds read whole into uint8 arrays: (directory, split) -> arrays.
_ARRAY_READERS = {
    "idx": idx_format.load_idx_split,
    "cifar10": cifar10.load_cifar10_split,
}
# tfds datasets small enough to load whole into memory.
_TFDS_IN_MEMORY = ("mnist", "fashion_mnist", "cifar10")

# Datasets whose image folders are labelled by a fixed, full class list.
_CLASS_INDEX = {"imagenet2012": ilsvrc_sample.imagenet_wnids}

# Decoded image-folder arrays, shared by the runs of one process (seeds).
_DECODE_CACHE = {}


class Split:
    """One split: a uint8 array, a list of image files, or a tf.data stream."""

    def __init__(
        self,
        labels,
        images=None,
        paths=None,
        stream=None,
        num_classes=None,
        records=None,
    ):
        self.labels = labels
        self.images = images
        self.paths = paths
        self.stream = stream
        self.num_classes = num_classes
        self.records = records  # tfds_stream.TfdsRecords (tfds train split)

    @property
    def kind(self):
        if self.images is not None:
            return "array"
        if self.records is not None:
            return "records"
        return "files" if self.paths is not None else "stream"

    @property
    def size(self):
        return len(self.labels)

    def take(self, index):
        return Split(
            self.labels[index],
            None if self.images is None else self.images[index],
            None if self.paths is None else [self.paths[i] for i in index],
            num_classes=self.num_classes,
        )


def generate(input_shape, num_classes, num_train, num_val, noise):
    """The `(train, val)` splits of the generated `synthetic` set."""
    shape = tuple(input_shape or (16, 16, 1))
    if len(shape) != 3:
        raise ValueError(
            "synthetic data needs input_shape=(H, W, C). Received: "
            f"input_shape={input_shape!r}"
        )
    classes = int(num_classes or 4)
    splits = []
    for n, data_seed in ((num_train or 512, 1), (num_val or 128, 2)):
        images, labels = synthetic.make_synthetic(
            n, shape, classes, noise, seed=data_seed
        )
        splits.append(Split(labels, images, num_classes=classes))
    return splits[0], splits[1]


def load(name, source, local_dir, tfds_data_dir, manual_dir, download):
    """Finds the data of a stored (not `synthetic`) dataset, failing fast
    with a one-line fix, and lists its `(train, val)` splits."""
    kind, tfds_name, train_split, val_split = DATASETS[name]
    if kind == "synthetic":
        raise ValueError(f"{name!r} is generated (`generate`), not loaded.")
    directory = None
    if source != "tfds":
        directory = data_root.resolve_local_dir(name, local_dir)
    if directory is None and source == "local":
        raise MissingDataError(
            data_root.missing_data_message(name, local_dir, tfds_name)
        )
    if directory is None:
        return _load_tfds(
            name,
            tfds_name,
            (train_split, val_split),
            tfds_data_dir,
            manual_dir,
            download,
            local_dir,
        )
    if kind in _ARRAY_READERS:
        splits = []
        for split in ("train", "test"):
            images, labels = _ARRAY_READERS[kind](directory, split)
            splits.append(Split(labels, images, num_classes=10))
        return splits[0], splits[1]
    # ILSVRC-2012 folders hold any subset of the 1,000 wnids; each label is
    # the wnid's canonical index (tfds' list), as on the tfds path.
    index = _CLASS_INDEX[name]() if name in _CLASS_INDEX else None
    train_paths, train_labels, classes = image_folder.list_image_folder(
        directory / "train", class_index=index
    )
    val_paths, val_labels, _ = image_folder.list_image_folder(
        directory / "val",
        None if index else classes,
        class_index=index,
    )
    return (
        Split(train_labels, paths=train_paths, num_classes=len(classes)),
        Split(val_labels, paths=val_paths, num_classes=len(classes)),
    )


def _load_tfds(
    name, tfds_name, splits, data_dir, manual_dir, download, local_dir
):
    import tensorflow_datasets as tfds

    builder = tfds.builder(tfds_name, data_dir=data_dir)
    if not builder.is_prepared():
        if not download:
            raise MissingDataError(
                data_root.missing_data_message(
                    name,
                    local_dir,
                    tfds_name,
                )
            )
        if name == "imagenet2012" and not (
            manual_dir and os.path.isdir(os.path.expanduser(manual_dir))
        ):
            raise MissingDataError(
                "imagenet2012 cannot be downloaded: put ILSVRC2012_img_train"
                ".tar and ILSVRC2012_img_val.tar in a folder and pass "
                f"data.manual_dir=<folder>. Received: manual_dir={manual_dir!r}"
            )
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
        )
    num_classes = builder.info.features["label"].num_classes
    result = []
    for split in splits:
        if name in _TFDS_IN_MEMORY:
            images, labels = tfds.as_numpy(
                builder.as_dataset(split, batch_size=-1, as_supervised=True)
            )
            result.append(
                Split(labels.astype(np.int32), images, num_classes=num_classes)
            )
        elif split == splits[0]:  # train: shuffled shards, cheap resume
            records = tfds_stream.TfdsRecords.from_builder(builder, split)
            labels = np.zeros(records.size)
            result.append(
                Split(labels, num_classes=num_classes, records=records)
            )
        else:
            ds = builder.as_dataset(
                split,
                as_supervised=True,
                shuffle_files=False,
                read_config=tfds.ReadConfig(interleave_cycle_length=1),
            )
            labels = np.zeros(builder.info.splits[split].num_examples)
            result.append(Split(labels, stream=ds, num_classes=num_classes))
    return tuple(result)


def subset(split, n):
    """The first `n` examples of a fixed (seed 0) permutation, in order.

    A tfds val stream keeps its first `n` records (tfds writes examples in
    a key-hash order, a fixed shuffle); the tfds train stream is kept whole.
    """
    if n is None or split.kind == "records" or n >= split.size:
        return split
    if n <= 0:
        raise ValueError(f"Subset size must be > 0. Received: n={n}")
    if split.kind == "stream":
        return Split(
            split.labels[:n],
            stream=split.stream.take(n),
            num_classes=split.num_classes,
        )
    index = np.sort(np.random.default_rng(0).permutation(split.size)[:n])
    return split.take(index)


def decode_image(path, decode_size=None):
    """Reads an image file as uint8 RGB; optionally a `decode_size` square.

    The square is AlexNet's (Sec. 2): shorter side resized to `decode_size`,
    then the central `decode_size x decode_size` patch.
    """
    image = tf.io.decode_image(
        tf.io.read_file(path), channels=3, expand_animations=False
    )
    return square_image(image, decode_size)


def square_image(image, decode_size=None):
    """uint8 image -> central `decode_size` square after a shorter-side resize.

    Rounded back to uint8, so cached and streamed pixels are identical.
    Returns `image` unchanged when `decode_size` is None.
    """
    if not decode_size:
        return image
    channels = image.shape[-1]
    image = aug.resize_shorter_side(tf.cast(image, tf.float32), decode_size)
    image = aug.center_crop(image, decode_size)
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    image.set_shape((decode_size, decode_size, channels))
    return image


def materialize(split, decode_size, cache):
    """Decodes an image-folder split into memory once per process.

    With `cache` a folder path, the decoded uint8 array is also saved there
    as `.npy` (named by a hash of the file list and `decode_size`) and
    loaded by later processes instead of decoding again.
    """
    if split.kind != "files" or not (cache and decode_size):
        return split
    key = (tuple(split.paths), decode_size)
    npy = None
    if isinstance(cache, str):
        digest = hashlib.sha1(repr(key).encode()).hexdigest()[:16]
        npy = os.path.join(
            os.path.expanduser(cache),
            f"decoded_{decode_size}px_{len(split.paths)}_{digest}.npy",
        )
    if key not in _DECODE_CACHE and npy and os.path.isfile(npy):
        _DECODE_CACHE[key] = np.load(npy)
    if key not in _DECODE_CACHE:
        ds = tf.data.Dataset.from_tensor_slices(split.paths).map(
            lambda p: decode_image(p, decode_size),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
        try:
            _DECODE_CACHE[key] = np.concatenate(
                list(ds.batch(256).as_numpy_iterator())
            )
        except tf.errors.InvalidArgumentError as e:
            raise _name_undecodable(split.paths, e) from e
    if npy and not os.path.isfile(npy):
        os.makedirs(os.path.dirname(npy), exist_ok=True)
        tmp = f"{npy}.{os.getpid()}.tmp.npy"
        np.save(tmp, _DECODE_CACHE[key])
        os.replace(tmp, npy)  # atomic: concurrent runs never read half
    return Split(
        split.labels, _DECODE_CACHE[key], num_classes=split.num_classes
    )


def _name_undecodable(paths, error):
    """A `DataError` naming the file(s) TensorFlow failed to decode.

    Its error names no file; the files are decoded one by one to find it
    (only after a failure; the header/trailer check at listing time catches
    truncated and non-image files first).
    """
    bad = []
    for path in paths:
        try:
            decode_image(path)
        except tf.errors.InvalidArgumentError:
            bad.append(path)
            if len(bad) == 3:
                break
    # TF's message: "{{function_node ...}} <reason>\n\t [[node ...]] ...".
    reason = error.message.strip().splitlines()[0].split("}} ")[-1]
    return DataError(
        f"cannot decode image file(s) {bad or '?'} ({reason.strip()})"
        "; replace them from the original archive (or delete them). "
        f"Received: {len(paths)} files"
    )
