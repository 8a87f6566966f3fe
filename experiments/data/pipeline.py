"""`make_datasets`: seeded, resumable `tf.data` pipelines for every dataset.

Train stream design (exact resume):
    Epoch `e` visits the examples in the order
    `stateless_shuffle(range(N), seed=(seed, e))`, truncated to
    `floor(N / batch_size) * batch_size` examples (the incomplete last batch
    of every epoch is dropped, so each batch lies inside one epoch). Batch
    `k` of the stream is therefore a pure function of `(seed, k)`:
    `make_datasets(..., skip_batches=k)` starts at batch `k` without reading
    the first `k` batches, and equals `train_ds.skip(k)` (which is exact
    too, but runs the map on the skipped batches: O(k)). Random
    augmentations use stateless ops seeded by `(seed, position)`, where
    `position` is the example's index in the infinite stream, so they resume
    exactly too.

In-memory datasets (MNIST, Fashion-MNIST, CIFAR-10, synthetic, and image
folders with `cache: true`) keep the whole uint8 array as one tensor and
gather a batch of indices per step (no per-example Python; augmentation-free
data is gathered and preprocessed per batch; augmented data goes through a
parallel, deterministic per-example map, which measured faster than one
batched `crop_and_resize`). Image folders without cache are decoded per
example in that map. Large tfds sets (ImageNet) stream from their shard
files, reshuffled every epoch and resumable in O(1) (`tfds_stream`).

Value pipeline per example: uint8 -> float32 * `rescale` (- mean image if
`mean="pixel"`) -> augmentation (train) or resize + centre crop (val) ->
`binarize` -> `(x - mean) / std` -> `flatten`. `mean` and `std` are always
in the units of the rescaled pixels: computed ones on rescaled data, list
ones given in 0-255 units and multiplied by `rescale` (`pixel_statistic`).
"""

import hashlib
import os

import numpy as np
import tensorflow as tf

from experiments.data import augment as aug
from experiments.data import ilsvrc_sample
from experiments.data import sources
from experiments.data import tfds_stream
from experiments.engine.exit_codes import DataError

AUTOTUNE = tf.data.AUTOTUNE
SOURCES = ("auto", "tfds", "local")

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
    "idx": sources.load_idx_split,
    "cifar10": sources.load_cifar10_split,
}
# tfds datasets small enough to load whole into memory.
_TFDS_IN_MEMORY = ("mnist", "fashion_mnist", "cifar10")

# Datasets whose image folders are labelled by a fixed, full class list.
_CLASS_INDEX = {"imagenet2012": ilsvrc_sample.imagenet_wnids}

# Decoded image-folder arrays, shared by the runs of one process (seeds).
_DECODE_CACHE = {}


def make_datasets(
    name,
    batch_size,
    eval_batch_size=None,
    input_shape=None,
    num_classes=None,
    seed=0,
    source="auto",
    local_dir=None,
    tfds_data_dir=None,
    manual_dir=None,
    download=False,
    skip_batches=0,
    rescale=1.0 / 255.0,
    binarize=False,
    flatten=False,
    mean=None,
    std=None,
    augment=None,
    crop_size=None,
    resize_size=None,
    decode_size=None,
    scale_range=None,
    area_range=(0.08, 1.0),
    aspect_range=(0.75, 4.0 / 3.0),
    lighting_std=0.1,
    val_crop=True,
    cache=True,
    num_train_examples=None,
    num_val_examples=None,
    noise=0.25,
    shuffle_chunk_files=8,
):
    """Builds the `(train_ds, val_ds)` pair of a dataset.

    Args:
        name: one of `DATASETS`: `synthetic, mnist, fashion_mnist, cifar10,
            imagenette, imagenet2012, imagenet21k` (local folders only).
        batch_size: training batch size.
        eval_batch_size: validation batch size (default `batch_size`).
        input_shape: expected `(H, W, C)` (or `(D,)` when flattened) of one
            example; checked against the pipeline's output. For `synthetic`
            it sets the generated image shape (default `(16, 16, 1)`).
        num_classes: expected number of classes (checked when known).
        seed: seed of the training order and augmentations.
        source: `auto` (local directory when present, else tfds), `local`
            or `tfds`.
        local_dir: offline directory: the dataset folder itself or a root
            holding `mnist/`, `imagenette2-224/`, ...; default
            `$CONVNET_REPRO_DATA_DIR`.
        tfds_data_dir: `data_dir` of `tfds.load`.
        manual_dir: tfds `manual_dir` (ImageNet tar files for
            `imagenet2012`).
        download: allow tfds to download/prepare a missing dataset.
        skip_batches: start the train stream at this batch (exact resume).
        rescale: multiplies the uint8 pixels (default `1/255` -> [0, 1]).
        binarize: threshold rescaled pixels at 0.5 (BN paper Sec. 4.1 "28x28
            binary image"): `x > 0.5 -> 1.0 else 0.0`.
        flatten: reshape each example to a vector.
        mean: per-channel mean to subtract: a list in raw 0-255 pixel
            units (multiplied by `rescale`, so it is in the units of the
            pixels the model sees whatever `rescale` is; e.g. ImageNet's
            `[123.68, 116.78, 103.94]`), or `"channel"` to compute it on
            the training set, or `"pixel"` for the training set's mean
            image (AlexNet Sec. 2, ResNet Sec. 3.4; in-memory data only;
            subtracted before augmentation at the stored resolution), or
            None.
        std: per-channel std to divide by (a list in 0-255 pixel units,
            multiplied by `rescale`, or `"channel"`), or None.
        augment: training policy name(s) of `augment.POLICIES`, or None.
        crop_size: train and val crop side (None: no crop).
        resize_size: val (and AlexNet train) shorter side before the centre
            crop (default `256 * crop_size / 224`).
        decode_size: image folders: decode to a `decode_size` square (shorter
            side resize + centre crop, AlexNet Sec. 2); None keeps the size.
        scale_range: `[S_min, S_max]` of the `vgg`/`resnet` policies.
        area_range: area fractions of the `googlenet` policy.
        aspect_range: aspect ratios of the `googlenet` policy.
        lighting_std: PCA lighting alpha std (0 disables).
        val_crop: if False the val images are resized to `resize_size` but
            not cropped, for `eval_views` (10-crop, multi-scale).
        cache: image folders: keep all decoded images in memory (needs
            `decode_size`; decoded once per process). A folder path also
            stores the decoded arrays there as `.npy` for later processes.
        num_train_examples: keep only the first `n` training examples (in a
            fixed, seed-independent order; the synthetic set size).
        num_val_examples: same for validation.
        noise: `synthetic` noise std.
        shuffle_chunk_files: tfds training stream: shard files whose records
            are fully shuffled together each epoch (`tfds_stream`).

    Returns:
        `(train_ds, val_ds)`: `train_ds` an infinite stream of
        `(float32 images (batch_size, *input_shape), int32 labels)`; `val_ds`
        finite, ordered, with a last partial batch.

    Raises:
        ValueError: invalid arguments.
        sources.MissingDataError: the dataset is not available offline and
            may not be downloaded (raised before any data is read).

    Example:
    >>> train_ds, val_ds = make_datasets("synthetic", batch_size=8)
    >>> [t.shape for t in next(iter(train_ds))]
    [TensorShape([8, 16, 16, 1]), TensorShape([8])]
    """
    if name not in DATASETS:
        raise ValueError(
            f"Unknown dataset. Expected one of {sorted(DATASETS)}. "
            f"Received: name={name!r}"
        )
    if source not in SOURCES:
        raise ValueError(
            f"data.source must be one of {SOURCES}. Received: source={source!r}"
        )
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(
            f"batch_size must be a positive int. Received: "
            f"batch_size={batch_size!r}"
        )
    if not isinstance(seed, int):
        raise ValueError(
            f"data.seed must be an int (it fixes the training order). "
            f"Received: seed={seed!r}"
        )
    if not isinstance(skip_batches, int) or skip_batches < 0:
        raise ValueError(
            "skip_batches must be an int >= 0. Received: "
            f"skip_batches={skip_batches!r}"
        )
    eval_batch_size = eval_batch_size or batch_size
    if crop_size and not resize_size:
        resize_size = aug.scaled(256, crop_size)
    augment_fn = aug.build_policy(
        augment,
        crop_size=crop_size,
        resize_size=resize_size,
        scale_range=scale_range,
        area_range=area_range,
        aspect_range=aspect_range,
        # The PCA eigenvalues are for [0, 1] pixels; scaling alpha scales
        # the colour shift to the pixel range `rescale` gives (raw 0-255
        # pixels with rescale=1, as AlexNet Sec. 2 trains on).
        lighting_std=(lighting_std or 0.0) * 255.0 * rescale,
    )
    needs_augment = augment not in (None, "none", [], ["none"])

    train, val = _load(
        name,
        source,
        local_dir,
        tfds_data_dir,
        manual_dir,
        download,
        input_shape,
        num_classes,
        num_train_examples,
        num_val_examples,
        noise,
    )
    train = _materialize(_subset(train, num_train_examples), decode_size, cache)
    val = _materialize(_subset(val, num_val_examples), decode_size, cache)
    if num_classes is not None and train.num_classes is not None:
        if int(num_classes) != train.num_classes:
            raise ValueError(
                f"{name} has {train.num_classes} classes but the config says "
                f"{num_classes}; fix data.num_classes. Received: "
                f"num_classes={num_classes}"
            )
    mean_image = None
    if isinstance(mean, str) and mean == "pixel":
        if train.kind != "array":
            raise ValueError(
                "mean='pixel' needs an in-memory dataset (data.cache=true and "
                "data.decode_size); otherwise use 'channel' or a list. "
                f"Received: mean={mean!r}"
            )
        mean_image = tf.constant(
            train.images.mean(axis=0, dtype=np.float64) * rescale, tf.float32
        )
        mean = None
    mean = _statistic(mean, "mean", train, rescale)
    std = _statistic(std, "std", train, rescale)

    def finish(x):
        if binarize:
            x = tf.cast(x > 0.5, tf.float32)
        if mean is not None:
            x = x - mean
        if std is not None:
            x = x / std
        if flatten:
            x = tf.reshape(x, tf.concat([tf.shape(x)[:-3], [-1]], 0))
        return x

    def to_float(x):
        x = tf.cast(x, tf.float32) * rescale
        return x if mean_image is None else x - mean_image

    def view(x, crop):
        # Deterministic view: shorter side to `resize_size`, centre crop.
        if crop or resize_size:
            x = aug.eval_transform(x, crop, resize_size)
        return x

    def train_batch(x):  # no augmentation: whole batches at once
        return finish(view(to_float(x), crop_size))

    def train_example(x, seed_pair):
        if not needs_augment:
            return train_batch(x)
        return finish(augment_fn(to_float(x), seed_pair))

    def val_example(x):
        return finish(view(to_float(x), crop_size if val_crop else None))

    train_ds = _train_stream(
        train,
        batch_size,
        seed,
        skip_batches,
        train_example,
        train_batch,
        per_example=needs_augment or train.kind != "array",
        decode_size=decode_size,
        chunk_files=shuffle_chunk_files,
    )
    val_ds = _val_stream(
        val, eval_batch_size, val_example, val_example, decode_size
    )
    _check_spec(train_ds, input_shape, name)
    return train_ds, val_ds


class _Split:
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
        return _Split(
            self.labels[index],
            None if self.images is None else self.images[index],
            None if self.paths is None else [self.paths[i] for i in index],
            num_classes=self.num_classes,
        )


def _load(
    name,
    source,
    local_dir,
    tfds_data_dir,
    manual_dir,
    download,
    input_shape,
    num_classes,
    num_train,
    num_val,
    noise,
):
    """Finds the data (failing fast with a one-line fix) and lists it."""
    kind, tfds_name, train_split, val_split = DATASETS[name]
    if kind == "synthetic":
        shape = tuple(input_shape or (16, 16, 1))
        if len(shape) != 3:
            raise ValueError(
                "synthetic data needs input_shape=(H, W, C). Received: "
                f"input_shape={input_shape!r}"
            )
        classes = int(num_classes or 4)
        splits = []
        for n, data_seed in ((num_train or 512, 1), (num_val or 128, 2)):
            images, labels = sources.make_synthetic(
                n, shape, classes, noise, seed=data_seed
            )
            splits.append(_Split(labels, images, num_classes=classes))
        return splits[0], splits[1]
    directory = None
    if source != "tfds" and kind != "none":
        directory = sources.resolve_local_dir(name, local_dir)
    if directory is None and source == "local":
        raise sources.MissingDataError(
            sources.missing_data_message(
                name, local_dir, tfds_name, local_reader=kind != "none"
            )
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
            splits.append(_Split(labels, images, num_classes=10))
        return splits[0], splits[1]
    # ILSVRC-2012 folders hold any subset of the 1,000 wnids; each label is
    # the wnid's canonical index (tfds' list), as on the tfds path.
    index = _CLASS_INDEX[name]() if name in _CLASS_INDEX else None
    train_paths, train_labels, classes = sources.list_image_folder(
        directory / "train", class_index=index
    )
    val_paths, val_labels, _ = sources.list_image_folder(
        directory / "val",
        None if index else classes,
        class_index=index,
    )
    return (
        _Split(train_labels, paths=train_paths, num_classes=len(classes)),
        _Split(val_labels, paths=val_paths, num_classes=len(classes)),
    )


def _load_tfds(
    name, tfds_name, splits, data_dir, manual_dir, download, local_dir
):
    import tensorflow_datasets as tfds

    builder = tfds.builder(tfds_name, data_dir=data_dir)
    if not builder.is_prepared():
        if not download:
            raise sources.MissingDataError(
                sources.missing_data_message(
                    name,
                    local_dir,
                    tfds_name,
                    local_reader=DATASETS[name][0] != "none",
                )
            )
        if name == "imagenet2012" and not (
            manual_dir and os.path.isdir(os.path.expanduser(manual_dir))
        ):
            raise sources.MissingDataError(
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
                _Split(labels.astype(np.int32), images, num_classes=num_classes)
            )
        elif split == splits[0]:  # train: shuffled shards, cheap resume
            records = tfds_stream.TfdsRecords.from_builder(builder, split)
            labels = np.zeros(records.size)
            result.append(
                _Split(labels, num_classes=num_classes, records=records)
            )
        else:
            ds = builder.as_dataset(
                split,
                as_supervised=True,
                shuffle_files=False,
                read_config=tfds.ReadConfig(interleave_cycle_length=1),
            )
            labels = np.zeros(builder.info.splits[split].num_examples)
            result.append(_Split(labels, stream=ds, num_classes=num_classes))
    return tuple(result)


def _subset(split, n):
    """The first `n` examples of a fixed (seed 0) permutation, in order.

    A tfds val stream keeps its first `n` records (tfds writes examples in
    a key-hash order, a fixed shuffle); the tfds train stream is kept whole.
    """
    if n is None or split.kind == "records" or n >= split.size:
        return split
    if n <= 0:
        raise ValueError(f"Subset size must be > 0. Received: n={n}")
    if split.kind == "stream":
        return _Split(
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


def _materialize(split, decode_size, cache):
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
    return _Split(
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


def _statistic(value, what, split, rescale):
    """A per-channel constant from a list, or computed on the train array."""
    if value is None:
        return None
    if isinstance(value, str):
        if value != "channel":
            raise ValueError(
                f"data.{what} must be a list, 'channel'"
                + (", 'pixel'" if what == "mean" else "")
                + f" or null. Received: {what}={value!r}"
            )
        if split.kind != "array":
            raise ValueError(
                f"{what}='channel' (computed on the training set) needs an "
                "in-memory dataset (set data.cache=true and data.decode_size)"
                f"; otherwise give a list. Received: {what}={value!r}"
            )
        # Chunked float64 sums: no full-size float copy of the images.
        total = np.zeros(split.images.shape[-1])
        total_sq = np.zeros_like(total)
        for start in range(0, split.size, 1024):
            chunk = split.images[start : start + 1024]
            chunk = chunk.reshape(-1, chunk.shape[-1]).astype(np.float64)
            total += chunk.sum(0)
            total_sq += (chunk**2).sum(0)
        count = split.images.size // split.images.shape[-1]
        mean = total / count
        stat = mean if what == "mean" else np.sqrt(total_sq / count - mean**2)
        return tf.constant(stat * rescale, tf.float32)
    return tf.constant(pixel_statistic(value, what, rescale), tf.float32)


def pixel_statistic(value, what, rescale):
    """A list `mean`/`std` given in 0-255 pixel units, in `rescale` units.

    Raises:
        ValueError: every entry is in (0, 1]: the list looks like [0, 1]
            units (e.g. `[0.485, 0.456, 0.406]`), which would subtract
            almost nothing from the pixels.
    """
    array = np.asarray(value, np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(
            f"data.{what} must be a non-empty list (one value per channel). "
            f"Received: {what}={value!r}"
        )
    if np.all((np.abs(array) > 0) & (np.abs(array) <= 1.0)):
        raise ValueError(
            f"data.{what} lists are in 0-255 pixel units (scaled by "
            f"data.rescale); {list(value)} looks like [0, 1] units: multiply "
            f"it by 255. Received: {what}={list(value)!r}"
        )
    return array * rescale


def _options():
    options = tf.data.Options()
    options.deterministic = True
    return options


def _train_stream(
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


def _val_stream(split, batch_size, batch_fn, example_fn, decode_size):
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


def _check_spec(ds, input_shape, name):
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
