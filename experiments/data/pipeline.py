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

import numpy as np
import tensorflow as tf

from convnet_repro.experiments.data import augment as aug
from convnet_repro.experiments.data import holdout
from convnet_repro.experiments.data import splits
from convnet_repro.experiments.data import streams
from convnet_repro.experiments.data.splits import DATASETS  # noqa: F401  (the registry)

SOURCES = ("auto", "tfds", "local")
EVAL_SPLITS = ("val", "tuning")


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
    tuning_per_class=None,
    eval_split="val",
    with_tuning=False,
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
        tuning_per_class: hold this many training examples of every class
            out of the train stream as the tuning split (`holdout`: fixed
            by the file names / a seed-0 permutation, the same for every
            seed); None trains on the whole training split.
        eval_split: what the second stream serves: `val` (the validation
            set) or `tuning` (the held-out tuning split, for early
            stopping and other choices; needs `tuning_per_class`).
        with_tuning: also return the tuning split's stream, built as the
            second stream is with `eval_split="tuning"` (the engine asks
            for it for a callback that scores the tuning split, e.g.
            `TuningEarlyStopping`; needs `tuning_per_class`).

    Returns:
        `(train_ds, val_ds)`: `train_ds` an infinite stream of
        `(float32 images (batch_size, *input_shape), int32 labels)`; `val_ds`
        finite, ordered, with a last partial batch. With `with_tuning`,
        `(train_ds, val_ds, tuning_ds)`.

    Raises:
        ValueError: invalid arguments.
        MissingDataError: the dataset is not available offline and
            may not be downloaded (raised before any data is read).

    Example:
    >>> train_ds, val_ds = make_datasets("synthetic", batch_size=8)
    >>> [t.shape for t in next(iter(train_ds))]
    [TensorShape([8, 16, 16, 1]), TensorShape([8])]
    """
    if name not in splits.DATASETS:
        raise ValueError(
            f"Unknown dataset. Expected one of {sorted(splits.DATASETS)}. "
            f"Received: name={name!r}"
        )
    if source not in SOURCES:
        raise ValueError(
            f"data.source must be one of {SOURCES}. Received: source={source!r}"
        )
    _check_int("batch_size", batch_size, minimum=1)
    _check_int("seed", seed, why=" (it fixes the training order)")
    _check_int("skip_batches", skip_batches, minimum=0)
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

    if eval_split not in EVAL_SPLITS:
        raise ValueError(
            f"data.eval_split must be one of {EVAL_SPLITS}. Received: "
            f"eval_split={eval_split!r}"
        )
    for wants, what in (
        (eval_split == "tuning", "data.eval_split=tuning"),
        (with_tuning, "A tuning-split callback"),
    ):
        if wants and tuning_per_class is None:
            raise ValueError(
                f"{what} needs a tuning split: set data.tuning_per_class "
                "(e.g. 50). Received: tuning_per_class=None"
            )
    if splits.DATASETS[name][0] == "synthetic":
        train, val = splits.generate(
            input_shape,
            num_classes,
            num_train_examples,
            num_val_examples,
            noise,
        )
    else:
        train, val = splits.load(
            name, source, local_dir, tfds_data_dir, manual_dir, download
        )
    train, tuning = holdout.split_off(train, tuning_per_class)
    if eval_split == "tuning":
        val = tuning
    train = splits.materialize(
        splits.subset(train, num_train_examples), decode_size, cache
    )

    def held_out(split):  # the val split, or the tuning split served alike
        return splits.materialize(
            splits.subset(split, num_val_examples), decode_size, cache
        )

    val = held_out(val)
    tuning = held_out(tuning) if with_tuning else None
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

    train_ds = streams.train_stream(
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

    def eval_stream(split):
        return streams.val_stream(
            split, eval_batch_size, val_example, val_example, decode_size
        )

    val_ds = eval_stream(val)
    streams.check_spec(train_ds, input_shape, name)
    if with_tuning:
        return train_ds, val_ds, eval_stream(tuning)
    return train_ds, val_ds


def _check_int(name, value, minimum=None, why=""):
    """Raises `ValueError` unless `value` is an int (>= `minimum` if given)."""
    if isinstance(value, int) and (minimum is None or value >= minimum):
        return
    bound = "" if minimum is None else f" >= {minimum}"
    raise ValueError(
        f"data.{name} must be an int{bound}{why}. Received: {name}={value!r}"
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
