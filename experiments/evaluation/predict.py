"""Stream a test protocol through models: per-image probabilities, batch
by batch.

Each batch of validation images is expanded to its protocol views
(`experiments.data.protocol_views`), every model predicts them, and the
softmax outputs are averaged over the views at once; only the `(B,
classes)` result of the batch leaves this module. What evaluation keeps
therefore does not grow with the number of images: running top-k counts
(`scoring.TopKCounter`) and, optionally, the per-image probabilities
streamed to disk (`store.ProbabilityWriter`).

`keras.Model.predict` would return every view's logits for the whole data
set at once (the memory this module exists to avoid), so the models are
called per batch of crops instead.
"""

import numpy as np

from convnet_repro.experiments.data.protocol_views import image_views
from convnet_repro.experiments.data.protocol_views import num_views
from convnet_repro.experiments.evaluation import scoring

# Largest number of crops per model call and per tf.data batch: a batch of
# images holds at most this many views (144-crop: 3 images of 144 views).
MAX_CROPS = 512


def eval_dataset(data_cfg, num_images=None):
    """Uncropped, preprocessed validation images of a data config.

    Instantiates `data_cfg` (a `conf/data/*.yaml` node) without crop,
    resize or augmentation (the keys its `_target_` accepts), so every
    image comes at its decoded size
    (`decode_size`) with the training pipeline's value preprocessing
    (rescale, mean/std): the views are then cut by `image_views`. Resizing
    and cropping commute with the per-channel affine normalisation.

    Args:
        data_cfg: dict or `DictConfig` with `_target_` (`make_datasets`).
        num_images: keep only the first `num_images` validation images.

    Returns:
        `(unbatched tf.data of (image (H, W, C), label), num_images or None)`.
    """
    import inspect

    import hydra
    from omegaconf import DictConfig
    from omegaconf import OmegaConf

    if isinstance(data_cfg, DictConfig):
        data_cfg = OmegaConf.to_container(data_cfg, resolve=True)
    data_cfg = dict(data_cfg)
    uncropped = {
        "crop_size": None,
        "resize_size": None,
        "augment": None,
        "input_shape": None,
        "eval_batch_size": 1,
        "val_crop": False,
    }
    if num_images:
        uncropped["num_val_examples"] = int(num_images)
    params = inspect.signature(
        hydra.utils.get_method(data_cfg["_target_"])
    ).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        if "crop_size" not in params:
            # A fixed-size generator (the engine's test data): its
            # `input_shape` is the image size, not a check on a crop.
            uncropped.pop("input_shape")
        uncropped = {k: v for k, v in uncropped.items() if k in params}
    data_cfg.update(uncropped)
    _, val_ds = hydra.utils.instantiate(data_cfg, _convert_="all")
    count = int(val_ds.cardinality())
    ds = val_ds.unbatch()
    if data_cfg.get("eval_batch_size") == 1 and count >= 0:
        # One image per batch: the count survives `unbatch` (the progress
        # line's total).
        import tensorflow as tf

        ds = ds.apply(tf.data.experimental.assert_cardinality(count))
    return ds, num_images


def crop_size(models):
    """The common square input side of `models` (ensemble members)."""
    if not models:
        raise ValueError("Need at least one model. Received: models=[]")
    shapes = {tuple(m.input_shape[1:3]) for m in models}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(
            "All ensemble members need the same static input size. "
            f"Received: input sizes={sorted(shapes, key=str)}"
        )
    height, width = next(iter(shapes))
    if height != width or height is None:
        raise ValueError(
            "Models must take square crops of a static size. "
            f"Received: input size={(height, width)}"
        )
    return int(height)


def _main_logits(outputs):
    """The main head's logits (GoogLeNet with aux heads outputs a dict)."""
    if isinstance(outputs, dict):
        outputs = outputs["logits"]
    elif isinstance(outputs, (list, tuple)):
        outputs = outputs[0]
    return np.asarray(outputs, dtype=np.float32)


def batch_probabilities(
    models,
    dataset,
    protocol,
    resize=None,
    scales=None,
    batch_size=32,
    preprocess=None,
    max_images=None,
    max_crops=MAX_CROPS,
    progress="auto",
):
    """Yields `(probs (models, B, classes) float32, labels (B,))` per batch.

    `probs[m]` is model `m`'s softmax averaged over the protocol's views of
    each image of the batch.

    Args:
        models: list of `keras.Model` with the same square input size.
        dataset: unbatched `tf.data` of `(image, label)`, any image size
            (e.g. from `eval_dataset`).
        protocol: one of `PROTOCOLS`.
        resize: test shorter side for `center`/`ten_crop`.
        scales: shorter sides for `multi_crop`.
        batch_size: images per batch; lowered so that a batch holds at most
            `max_crops` views (at least one image).
        preprocess: optional function applied to the float32 views before
            the model (e.g. `keras.applications` input scaling).
        max_images: evaluate only the first `max_images` images.
        max_crops: largest number of crops per model call.
        progress: `experiments.engine.progress` mode of the "images scored /
            total, ETA" line (shown when the total is known: `max_images`
            or the dataset's cardinality).
    """
    import tensorflow as tf

    from convnet_repro.experiments.engine.progress import ExperimentProgress

    crop = crop_size(models)
    views = num_views(protocol, scales)
    images_per_batch = max(1, min(batch_size, max_crops // views))
    if max_images:
        dataset = dataset.take(max_images)
    total = int(dataset.cardinality())
    shown = ExperimentProgress(
        "evaluate",
        [max(total, 0)],
        progress if total > 0 else "none",
        unit="images",
    )
    shown.begin_run(1, f"{protocol} x{views} views")
    done = 0

    def to_views(image, label):
        crops = image_views(image, protocol, crop, resize, scales)
        if preprocess is not None:
            crops = preprocess(crops)
        return crops, label

    ds = dataset.map(to_views, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(images_per_batch).prefetch(1)
    for crops, labels in ds:
        b = crops.shape[0]
        flat = tf.reshape(crops, (b * views,) + tuple(crops.shape[2:]))
        per_model = []
        for model in models:
            logits = np.concatenate(
                [
                    _main_logits(model(flat[j : j + max_crops], training=False))
                    for j in range(0, b * views, max_crops)
                ]
            )
            # (B * views) image-major -> (views, B, classes)
            logits = logits.reshape(b, views, -1).transpose(1, 0, 2)
            per_model.append(scoring.view_average(logits))
        done += b
        shown.update(done)
        yield np.stack(per_model), labels.numpy()
    shown.end_run()
    shown.close()


def evaluate(models, dataset, protocol, writer=None, **kwargs):
    """Top-1/top-5 error (percent) of `models` averaged as an ensemble.

    The ensemble is the equal-weight mean of the members' view-averaged
    softmax outputs (Krizhevsky et al. 2012, Table 2; Szegedy et al. 2015,
    Table 3); it is scored batch by batch.

    Args:
        models: list of `keras.Model` (one model = a single-model row).
        dataset: see `batch_probabilities`.
        protocol: one of `PROTOCOLS`.
        writer: optional `store.PredictionWriter` that receives the
            ensemble's per-image probabilities and the labels.
        **kwargs: forwarded to `batch_probabilities`.

    Returns:
        dict with `top1_error`, `top5_error` (percent), `num_images`,
        `num_views`, `num_models`.
    """
    counter = scoring.TopKCounter()
    for probs, labels in batch_probabilities(
        models, dataset, protocol, **kwargs
    ):
        mean = probs.mean(axis=0)
        counter.update(mean, labels)
        if writer is not None:
            writer.append(mean, labels)
    return {
        **counter.result(),
        "num_views": num_views(protocol, kwargs.get("scales")),
        "num_models": len(models),
    }


def predict_to_file(model, dataset, protocol, writer, **kwargs):
    """Streams one model's per-image probabilities into `writer`.

    Args:
        model: a `keras.Model`.
        dataset, protocol, **kwargs: see `batch_probabilities`.
        writer: a `store.PredictionWriter` (closed on return).

    Returns:
        The number of views per image; the predictions are on disk.
    """
    for probs, labels in batch_probabilities(
        [model], dataset, protocol, **kwargs
    ):
        writer.append(probs[0], labels)
    writer.close()
    return num_views(protocol, kwargs.get("scales"))
