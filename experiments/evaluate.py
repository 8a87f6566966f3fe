"""Evaluate trained classifiers with the papers' test protocols.

Loads the `.keras` models logged by `experiments.train` (MLflow run ids,
`runs:/<id>`, registered models `models:/<name>/<version>` or plain `.keras`
paths), predicts every validation image under a test protocol, averages the
softmax outputs over the views and over the models (an ensemble when several
sources are given) and logs top-1/top-5 error as a new MLflow run.

Protocols (views per image):

- `center` (1): shorter side resized to `resize`, central `crop` x `crop`.
  Stands in for VGG's single-scale *dense* evaluation (Simonyan & Zisserman
  2015, Table 3); our heads are not fully convolutional (deviation, see the
  VGG configs).
- `ten_crop` (10): shorter side `resize`, four corner crops + the centre crop
  and their horizontal mirrors. Krizhevsky et al. 2012, Sec. 4.1 ("five
  224x224 patches ... as well as their horizontal reflections ... averaging
  the predictions"); He et al. 2016, Table 3 uses the same protocol.
- `multi_crop` (36 per scale, 144 with 4 scales): Szegedy et al. 2015,
  Sec. 7: shorter side resized to each of `scales` (paper: 256, 288, 320,
  352); the left/centre/right (top/centre/bottom) squares; per square the 4
  corner and centre crops plus the square resized to `crop`; and mirrors.

Ensembles average the per-model softmax outputs with equal weights
(Krizhevsky et al. 2012, Table 2 "5 CNNs"; Szegedy et al. 2015, Table 3).
Errors are logged in percent, as the papers report them.

Usage:
    python -m experiments.evaluate RUN_ID [RUN_ID ...] --protocol ten_crop \
        --data imagenette --row "AlexNet, 5 CNNs"
"""

import argparse
import os
import pathlib
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

PROTOCOLS = ("center", "ten_crop", "multi_crop")
# Szegedy et al. 2015, Sec. 7: shorter sides 256, 288, 320, 352 for a 224 crop.
GOOGLENET_SCALE_RATIOS = (256 / 224, 288 / 224, 320 / 224, 352 / 224)
DEFAULT_EXPERIMENT = "imagenet_table"


# ---------------------------------------------------------------------------
# Views (TensorFlow ops on one image, usable inside tf.data)
# ---------------------------------------------------------------------------


def default_resize(crop):
    """Test shorter side for a crop size, keeping AlexNet's 256/224 ratio."""
    return int(round(crop * 256 / 224))


def default_scales(crop):
    """GoogLeNet's four test scales (256..352 for 224) rescaled to `crop`."""
    return [int(round(crop * r)) for r in GOOGLENET_SCALE_RATIOS]


def num_views(protocol, scales=None):
    """Number of views per image that `protocol` produces.

    Args:
        protocol: one of `PROTOCOLS`.
        scales: list of shorter sides for `multi_crop` (4 gives 144 views).

    Returns:
        int.
    """
    _check_protocol(protocol)
    if protocol == "center":
        return 1
    if protocol == "ten_crop":
        return 10
    return 36 * len(scales or GOOGLENET_SCALE_RATIOS)


def _check_protocol(protocol):
    if protocol not in PROTOCOLS:
        raise ValueError(
            f"Unknown test protocol; use one of {list(PROTOCOLS)}. "
            f"Received: protocol={protocol!r}"
        )


def resize_shorter_side(image, size):
    """Resizes `image` (H, W, C) so that its shorter side equals `size`.

    Bilinear with antialiasing; the aspect ratio is kept and the longer side
    rounded to the nearest pixel. Returns float32.
    """
    import tensorflow as tf

    image = tf.convert_to_tensor(image)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.cast(size, tf.float32) / tf.reduce_min(shape)
    new = tf.cast(tf.round(shape * scale), tf.int32)
    new = tf.maximum(new, size)  # guard rounding below `size`
    return tf.image.resize(image, new, antialias=True)


def five_crops(image, crop):
    """Top-left, top-right, bottom-left, bottom-right and centre crops.

    Args:
        image: `(H, W, C)` tensor with `H, W >= crop`.
        crop: int, side of the square crops.

    Returns:
        `(5, crop, crop, C)` tensor.
    """
    import tensorflow as tf

    h, w = tf.shape(image)[0], tf.shape(image)[1]
    offsets = [
        (0, 0),
        (0, w - crop),
        (h - crop, 0),
        (h - crop, w - crop),
        ((h - crop) // 2, (w - crop) // 2),
    ]
    return tf.stack(
        [image[y : y + crop, x : x + crop] for y, x in offsets], axis=0
    )


def _with_mirrors(views):
    import tensorflow as tf

    return tf.concat([views, tf.reverse(views, axis=[2])], axis=0)


def _squares(image):
    """Left/centre/right (or top/centre/bottom) squares of `image`."""
    import tensorflow as tf

    h, w = tf.shape(image)[0], tf.shape(image)[1]
    s = tf.minimum(h, w)
    dy, dx = h - s, w - s  # one of them is zero
    return [
        image[y : y + s, x : x + s]
        for y, x in ((0, 0), (dy // 2, dx // 2), (dy, dx))
    ]


def image_views(image, protocol, crop, resize=None, scales=None):
    """All test views of one image under `protocol`.

    Args:
        image: `(H, W, C)` image of any size (uint8 or float).
        protocol: `"center"`, `"ten_crop"` or `"multi_crop"`.
        crop: int, the model's input side.
        resize: shorter side before cropping (`center`, `ten_crop`);
            defaults to `default_resize(crop)`.
        scales: shorter sides for `multi_crop`; defaults to
            `default_scales(crop)`.

    Returns:
        float32 tensor `(num_views(protocol, scales), crop, crop, C)`.
    """
    import tensorflow as tf

    _check_protocol(protocol)
    resize = resize or default_resize(crop)
    if resize < crop:
        raise ValueError(
            "The test resize must be >= the crop size; raise `resize`. "
            f"Received: resize={resize}, crop={crop}"
        )
    image = tf.cast(image, tf.float32)
    if protocol in ("center", "ten_crop"):
        resized = resize_shorter_side(image, resize)
        views = five_crops(resized, crop)
        return views[4:] if protocol == "center" else _with_mirrors(views)
    views = []
    for scale in scales or default_scales(crop):
        resized = resize_shorter_side(image, scale)
        for square in _squares(resized):
            whole = tf.image.resize(square, (crop, crop), antialias=True)
            views.append(
                tf.concat([five_crops(square, crop), whole[None]], axis=0)
            )
    return _with_mirrors(tf.concat(views, axis=0))


# ---------------------------------------------------------------------------
# Maths on predictions
# ---------------------------------------------------------------------------


def softmax(logits, axis=-1):
    """Numerically stable softmax in float64."""
    logits = np.asarray(logits, dtype=np.float64)
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def average_probabilities(logits):
    """Averages softmax outputs over models and views.

    Args:
        logits: array `(models, views, N, classes)` (or any leading axes
            before `(N, classes)`).

    Returns:
        `(N, classes)` mean of the softmax outputs with equal weights.
    """
    logits = np.asarray(logits)
    probs = softmax(logits)
    return probs.reshape((-1,) + probs.shape[-2:]).mean(axis=0)


def top_k_error(probs, labels, k):
    """Fraction of samples whose label is not among the top `k` scores.

    A label counts as within the top `k` when fewer than `k` classes score
    strictly higher (ties favour the label).

    Args:
        probs: `(N, classes)` scores.
        labels: `(N,)` integer labels.
        k: int >= 1.

    Returns:
        float in [0, 1].
    """
    probs = np.asarray(probs)
    labels = np.asarray(labels).astype(np.int64)
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(
            "Expected probs (N, classes) and labels (N,). "
            f"Received: probs.shape={probs.shape}, labels.shape={labels.shape}"
        )
    true = probs[np.arange(len(labels)), labels]
    rank = (probs > true[:, None]).sum(axis=1)
    return float(np.mean(rank >= k))


# ---------------------------------------------------------------------------
# Validation images
# ---------------------------------------------------------------------------


def _data_root():
    return os.environ.get("CONVNET_REPRO_DATA_DIR")


def local_val_files(val_dir):
    """Sorted `(paths, labels)` of `val_dir/<class>/*`; label = class index.

    Classes are the sorted sub-folder names (WordNet ids), the order the
    training data uses.
    """
    val_dir = pathlib.Path(val_dir)
    classes = sorted(p.name for p in val_dir.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(
            "No class folders found; point `data_dir` at a folder holding "
            f"<split>/<wnid>/*.JPEG. Received: val_dir={str(val_dir)!r}"
        )
    paths, labels = [], []
    for index, name in enumerate(classes):
        for path in sorted((val_dir / name).iterdir()):
            paths.append(str(path))
            labels.append(index)
    return paths, np.asarray(labels, dtype=np.int32)


def val_dataset(dataset="imagenette", data_dir=None, split="val"):
    """Unbatched `tf.data` of `(uint8 image (H, W, 3), int32 label)`.

    Args:
        dataset: `"imagenette"` (JPEG folders under
            `data_dir/imagenette2-224/<split>`) or `"imagenet2012"`
            (tensorflow-datasets, `manual_dir=data_dir`).
        data_dir: data root; defaults to `$CONVNET_REPRO_DATA_DIR`.
        split: `"val"`/`"train"` for imagenette, a tfds split otherwise.

    Returns:
        `(dataset, num_images)`.
    """
    import tensorflow as tf

    data_dir = data_dir or _data_root()
    if dataset == "imagenette":
        root = pathlib.Path(data_dir or ".")
        if (root / "imagenette2-224").is_dir():
            root = root / "imagenette2-224"
        paths, labels = local_val_files(root / split)

        def load(path, label):
            image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
            return image, label

        ds = tf.data.Dataset.from_tensor_slices((paths, labels))
        return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE), len(paths)
    if dataset == "imagenet2012":
        import tensorflow_datasets as tfds

        split = "validation" if split == "val" else split
        config = tfds.download.DownloadConfig(manual_dir=data_dir)
        ds, info = tfds.load(
            "imagenet2012",
            split=split,
            as_supervised=True,
            shuffle_files=False,
            download_and_prepare_kwargs={"download_config": config},
            with_info=True,
        )
        return ds, info.splits[split].num_examples
    raise ValueError(
        "Unknown evaluation dataset; use 'imagenette' or 'imagenet2012'. "
        f"Received: dataset={dataset!r}"
    )


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------


def _find_keras_artifact(client, run_id, path=None):
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            found = _find_keras_artifact(client, run_id, info.path)
            if found:
                return found
        elif info.path.endswith(".keras"):
            return info.path
    return None


def resolve_run_id(source):
    """Run id behind `source` (`<id>`, `runs:/<id>[/...]`, `models:/n/v`)."""
    from mlflow import MlflowClient

    if source.startswith("models:/"):
        parts = source[len("models:/") :].strip("/").split("/")
        if len(parts) != 2:
            raise ValueError(
                "Registered models are written models:/<name>/<version>. "
                f"Received: source={source!r}"
            )
        return MlflowClient().get_model_version(*parts).run_id
    if source.startswith("runs:/"):
        return source[len("runs:/") :].strip("/").split("/")[0]
    return source


def load_model(source, dst_dir=None):
    """Loads a Keras model from a `.keras` path or an MLflow source.

    Args:
        source: path to a `.keras` file, a run id, `runs:/<id>` or
            `models:/<name>/<version>`; the first `.keras` artifact of the
            run is loaded.
        dst_dir: download folder (a temporary one by default).

    Returns:
        `keras.Model`.
    """
    import keras
    import mlflow
    from mlflow import MlflowClient

    import layers  # noqa: F401  (registers the custom layers)

    try:
        import models  # noqa: F401  (registers model-level custom objects)
    except ImportError:  # pragma: no cover
        pass
    if str(source).endswith(".keras") and os.path.exists(source):
        return keras.saving.load_model(source)
    run_id = resolve_run_id(str(source))
    artifact = _find_keras_artifact(MlflowClient(), run_id)
    if artifact is None:
        raise ValueError(
            "The run has no .keras artifact; train it with experiments.train "
            f"(which logs the final model). Received: source={source!r}"
        )
    dst_dir = dst_dir or tempfile.mkdtemp(prefix="evaluate_")
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=artifact, dst_path=dst_dir
    )
    return keras.saving.load_model(local)


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------


def predict_logits(
    models,
    dataset,
    protocol,
    resize=None,
    scales=None,
    batch_size=32,
    preprocess=None,
    max_images=None,
):
    """Per-model, per-view logits on every image of `dataset`.

    Args:
        models: list of `keras.Model` with the same square input size.
        dataset: unbatched `tf.data` of `(image, label)`, any image size.
        protocol: one of `PROTOCOLS`.
        resize: test shorter side for `center`/`ten_crop`.
        scales: shorter sides for `multi_crop`.
        batch_size: images per batch (each expands to its views).
        preprocess: optional function applied to the float32 views (pixel
            range 0-255) before the model, e.g. mean subtraction when the
            model does not normalise its inputs itself.
        max_images: evaluate only the first `max_images` images.

    Returns:
        `(logits (models, views, N, classes) float32, labels (N,))`.
    """
    import tensorflow as tf

    if not models:
        raise ValueError("Need at least one model. Received: models=[]")
    shapes = {tuple(m.input_shape[1:3]) for m in models}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(
            "All ensemble members need the same static input size. "
            f"Received: input sizes={sorted(shapes)}"
        )
    height, width = next(iter(shapes))
    if height != width or height is None:
        raise ValueError(
            "Models must take square crops of a static size. "
            f"Received: input size={(height, width)}"
        )
    crop = int(height)
    if max_images:
        dataset = dataset.take(max_images)

    def to_views(image, label):
        views = image_views(image, protocol, crop, resize, scales)
        if preprocess is not None:
            views = preprocess(views)
        return views, label

    ds = dataset.map(to_views, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    per_model = [[] for _ in models]
    labels = []
    for views, label in ds:
        b, v = views.shape[0], views.shape[1]
        flat = tf.reshape(views, (b * v,) + tuple(views.shape[2:]))
        for i, model in enumerate(models):
            out = np.asarray(model(flat, training=False), dtype=np.float32)
            per_model[i].append(out.reshape(b, v, -1).transpose(1, 0, 2))
        labels.append(label.numpy())
    logits = np.stack([np.concatenate(p, axis=1) for p in per_model])
    return logits, np.concatenate(labels)


def evaluate(models, dataset, protocol, **kwargs):
    """Top-1/top-5 error (percent) of `models` averaged as an ensemble.

    Args:
        models: list of `keras.Model` (one model = a single-model row).
        dataset: see `predict_logits`.
        protocol: one of `PROTOCOLS`.
        **kwargs: forwarded to `predict_logits`.

    Returns:
        dict with `top1_error`, `top5_error` (percent), `num_images`,
        `num_views`, `num_models`.
    """
    logits, labels = predict_logits(models, dataset, protocol, **kwargs)
    probs = average_probabilities(logits)
    return {
        "top1_error": 100.0 * top_k_error(probs, labels, 1),
        "top5_error": 100.0 * top_k_error(probs, labels, 5),
        "num_images": int(len(labels)),
        "num_views": int(logits.shape[1]),
        "num_models": int(logits.shape[0]),
    }


def log_evaluation(
    result,
    sources,
    protocol,
    experiment_name=DEFAULT_EXPERIMENT,
    row=None,
    tags=None,
    params=None,
):
    """Logs one evaluation as an MLflow run and returns its id.

    Params: `sources` (comma-separated run ids / URIs), `protocol`,
    `num_models`, `num_views`, `num_images` plus `params`. Metrics:
    `top1_error`, `top5_error` (percent). Tags: `row` and `tags` (e.g. the
    paper's numbers `paper_top1_error`, the `table` and `scale`).
    """
    import mlflow

    mlflow.set_experiment(experiment_name)
    name = f"eval-{row or protocol}".replace("/", "-")[:200]
    with mlflow.start_run(run_name=name) as run:
        mlflow.log_params(
            {
                "sources": ",".join(map(str, sources))[:6000],
                "protocol": protocol,
                "num_models": result["num_models"],
                "num_views": result["num_views"],
                "num_images": result["num_images"],
                **(params or {}),
            }
        )
        mlflow.log_metrics({k: result[k] for k in ("top1_error", "top5_error")})
        all_tags = {"kind": "evaluation", **(tags or {})}
        if row:
            all_tags["row"] = row
        mlflow.set_tags({k: str(v) for k, v in all_tags.items()})
        return run.info.run_id


# ---------------------------------------------------------------------------
# Report hook: evaluate the runs of one experiment config
# ---------------------------------------------------------------------------


def _child_runs(parent_run_id):
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    children = mlflow.search_runs(
        experiment_ids=[parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        order_by=["attributes.start_time ASC"],
        output_format="list",
    )
    return [r.info.run_id for r in children]


def _paper_tags(row):
    tags = {}
    for key in ("paper_top1_error", "paper_top5_error"):
        if row.get(key) is not None:
            tags[key] = row[key]
    return tags


def evaluate_experiment(cfg, parent_run_id, dataset=None, models_by_run=None):
    """`report:` hook: evaluates every row listed in `cfg.evaluation.rows`.

    The trained models are the child runs of `parent_run_id` (one per seed or
    variant) or, without children, the parent run itself. Each row picks
    `members` of them (`all` or a count, in start order) and a `protocol`,
    and becomes one MLflow evaluation run tagged with the row name, the table,
    the scale and the paper's numbers.

    Args:
        cfg: the experiment's composed config (needs `evaluation`, `data`).
        parent_run_id: the training run (or parent of the seed runs).
        dataset: optional `(tf.data, num_images)` overriding `cfg.data`.
        models_by_run: optional `{run_id: keras.Model}` (tests).

    Returns:
        list of dicts (row name, evaluation run id and metrics).
    """
    ev = cfg.evaluation
    run_ids = _child_runs(parent_run_id) or [parent_run_id]
    models_by_run = dict(models_by_run or {})
    if dataset is None:
        dataset = val_dataset(
            ev.get("dataset", "imagenette"), ev.get("data_dir")
        )
    ds, _ = dataset
    results = []
    for row in ev.rows:
        members = row.get("members", "all")
        chosen = run_ids if members == "all" else run_ids[: int(members)]
        for rid in chosen:
            if rid not in models_by_run:
                models_by_run[rid] = load_model(rid)
        result = evaluate(
            [models_by_run[r] for r in chosen],
            ds,
            row.protocol,
            resize=ev.get("resize"),
            scales=list(ev.scales) if ev.get("scales") else None,
            batch_size=ev.get("batch_size", 32),
            max_images=ev.get("max_images"),
        )
        tags = {
            "table": ev.get("table", "imagenet"),
            "scale": ev.get("scale", "full"),
            "family": row.get("family", ev.get("family", "")),
            "order": row.get("order", 0),
            "parent_run_id": parent_run_id,
            **_paper_tags(row),
        }
        eval_id = log_evaluation(
            result,
            chosen,
            row.protocol,
            experiment_name=ev.get("experiment_name", DEFAULT_EXPERIMENT),
            row=row.row,
            tags=tags,
            params={"resize": ev.get("resize"), "scales": ev.get("scales")},
        )
        results.append({"row": row.row, "run_id": eval_id, **result})
        print(
            f"[evaluate] {row.row} ({row.protocol}, {len(chosen)} model(s)):"
            f" top-1 {result['top1_error']:.2f}%"
            f" top-5 {result['top5_error']:.2f}%"
        )
    return results


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def _parser():
    p = argparse.ArgumentParser(
        prog="python -m experiments.evaluate",
        description=(
            "Top-1/top-5 error of one model or an ensemble (softmax average) "
            "under a test protocol; logs an MLflow run."
        ),
    )
    p.add_argument(
        "sources",
        nargs="+",
        help="run ids, runs:/<id>, models:/<name>/<version> or .keras paths",
    )
    p.add_argument("--protocol", default="center", choices=PROTOCOLS)
    p.add_argument(
        "--dataset",
        default="imagenette",
        choices=("imagenette", "imagenet2012"),
    )
    p.add_argument(
        "--data-dir", default=None, help="default: $CONVNET_REPRO_DATA_DIR"
    )
    p.add_argument("--resize", type=int, default=None)
    p.add_argument("--scales", type=int, nargs="+", default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--row", default=None, help="table row name (tag)")
    p.add_argument("--table", default="imagenet")
    p.add_argument("--scale", default="mini", choices=("mini", "full"))
    p.add_argument("--paper-top1-error", type=float, default=None)
    p.add_argument("--paper-top5-error", type=float, default=None)
    p.add_argument("--experiment-name", default=DEFAULT_EXPERIMENT)
    p.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlruns.db"),
    )
    return p


def main(argv=None):
    """CLI entry point; prints and returns the result dict."""
    import mlflow

    args = _parser().parse_args(argv)
    mlflow.set_tracking_uri(args.tracking_uri)
    models = [load_model(s) for s in args.sources]
    ds, _ = val_dataset(args.dataset, args.data_dir)
    result = evaluate(
        models,
        ds,
        args.protocol,
        resize=args.resize,
        scales=args.scales,
        batch_size=args.batch_size,
        max_images=args.max_images,
    )
    tags = {"table": args.table, "scale": args.scale}
    if args.paper_top1_error is not None:
        tags["paper_top1_error"] = args.paper_top1_error
    if args.paper_top5_error is not None:
        tags["paper_top5_error"] = args.paper_top5_error
    result["run_id"] = log_evaluation(
        result,
        args.sources,
        args.protocol,
        experiment_name=args.experiment_name,
        row=args.row,
        tags=tags,
        params={"resize": args.resize, "scales": args.scales},
    )
    print(result)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
