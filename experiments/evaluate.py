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

Validation images come from an experiment's (or a data) config, through
the training pipeline's value preprocessing (`eval_dataset`).

Usage:
    python -m experiments.evaluate RUN_ID [RUN_ID ...] --protocol ten_crop \
        --experiment imagenette_alexnet_5cnns --row "AlexNet, 5 CNNs"
    python -m experiments.evaluate models:/alexnet/3 --data imagenet2012 \
        --override data.manual_dir=/data/imagenet --scale full

Reference:
- Krizhevsky et al., NIPS 2012, Sec. 4.1 and Table 2; Simonyan & Zisserman,
  ICLR 2015, Sec. 3.2; Szegedy et al., CVPR 2015, Sec. 7 and Table 3; He et
  al., CVPR 2016, Sec. 3.4 and Table 3.
"""

import argparse
import os
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

from experiments.data.protocol_views import PROTOCOLS  # noqa: E402
from experiments.data.protocol_views import image_views  # noqa: E402

DEFAULT_EXPERIMENT = "imagenet_table"


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


def eval_dataset(data_cfg, num_images=None):
    """Uncropped, preprocessed validation images of a data config.

    Instantiates `data_cfg` (a `conf/data/*.yaml` node) without crop,
    resize or augmentation, so every image comes at its decoded size
    (`decode_size`) with the training pipeline's value preprocessing
    (rescale, mean/std): the views are then cut by `image_views`. Resizing
    and cropping commute with the per-channel affine normalisation.

    Args:
        data_cfg: dict or `DictConfig` with `_target_` (`make_datasets`).
        num_images: keep only the first `num_images` validation images.

    Returns:
        `(unbatched tf.data of (image (H, W, C), label), num_images or None)`.
    """
    import hydra
    from omegaconf import DictConfig
    from omegaconf import OmegaConf

    if isinstance(data_cfg, DictConfig):
        data_cfg = OmegaConf.to_container(data_cfg, resolve=True)
    data_cfg = dict(data_cfg)
    data_cfg.update(
        crop_size=None,
        resize_size=None,
        augment=None,
        input_shape=None,
        eval_batch_size=1,
        val_crop=False,
    )
    if num_images:
        data_cfg["num_val_examples"] = int(num_images)
    _, val_ds = hydra.utils.instantiate(data_cfg, _convert_="all")
    return val_ds.unbatch(), num_images


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


def _main_logits(outputs):
    """The main head's logits (GoogLeNet with aux heads outputs a dict)."""
    if isinstance(outputs, dict):
        outputs = outputs["logits"]
    elif isinstance(outputs, (list, tuple)):
        outputs = outputs[0]
    return np.asarray(outputs, dtype=np.float32)


def predict_logits(
    models,
    dataset,
    protocol,
    resize=None,
    scales=None,
    batch_size=32,
    preprocess=None,
    max_images=None,
    max_crops=512,
):
    """Per-model, per-view logits on every image of `dataset`.

    Args:
        models: list of `keras.Model` with the same square input size.
        dataset: unbatched `tf.data` of `(image, label)`, any image size
            (e.g. from `eval_dataset`).
        protocol: one of `PROTOCOLS`.
        resize: test shorter side for `center`/`ten_crop`.
        scales: shorter sides for `multi_crop`.
        batch_size: images per batch (each expands to its views).
        preprocess: optional function applied to the float32 views (pixel
            range 0-255) before the model, e.g. mean subtraction when the
            model does not normalise its inputs itself.
        max_images: evaluate only the first `max_images` images.
        max_crops: largest number of crops per model call (memory bound;
            a batch of 50 images has 7200 crops under `multi_crop`).

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
            out = np.concatenate(
                [
                    _main_logits(model(flat[j : j + max_crops], training=False))
                    for j in range(0, b * v, max_crops)
                ]
            )
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
    return score(logits, labels)


def score(logits, labels):
    """Top-1/top-5 error (percent) of `(models, views, N, classes)` logits.

    Returns:
        dict with `top1_error`, `top5_error` (percent), `num_images`,
        `num_views`, `num_models`.
    """
    logits = np.asarray(logits)
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
    """Logs one evaluation as a new MLflow run and returns its id.

    Uses the client API, so it works while another run is active (e.g.
    inside the engine's `report:` hook).

    Params: `sources` (comma-separated run ids / URIs), `protocol`,
    `num_models`, `num_views`, `num_images` plus `params`. Metrics:
    `top1_error`, `top5_error` (percent). Tags: `kind=evaluation`, `row` and
    `tags` (e.g. `table`, `scale`, `family`, the paper's `paper_top1_error`).
    """
    import mlflow
    from mlflow.entities import Metric
    from mlflow.entities import Param

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(experiment_name)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(experiment_name)
    )
    all_tags = {"kind": "evaluation", **(tags or {})}
    if row:
        all_tags["row"] = row
    name = f"eval-{row or protocol}-{protocol}".replace("/", "-")[:200]
    run = client.create_run(
        experiment_id,
        run_name=name,
        tags={k: str(v) for k, v in all_tags.items()},
    )
    run_id = run.info.run_id
    all_params = {
        "sources": ",".join(map(str, sources))[:6000],
        "protocol": protocol,
        "num_models": result["num_models"],
        "num_views": result["num_views"],
        "num_images": result["num_images"],
        **(params or {}),
    }
    now = int(run.info.start_time or 0)
    client.log_batch(
        run_id,
        metrics=[
            Metric(k, float(result[k]), now, 0)
            for k in ("top1_error", "top5_error")
        ],
        params=[Param(k, str(v)) for k, v in all_params.items()],
        tags=[],
    )
    client.set_terminated(run_id, "FINISHED")
    return run_id


# ---------------------------------------------------------------------------
# Report hook: evaluate the runs of one experiment config
# ---------------------------------------------------------------------------


def _child_runs(parent_run_id):
    from mlflow import MlflowClient

    from experiments.tracking import child_runs

    return [r.info.run_id for r in child_runs(MlflowClient(), parent_run_id)]


def _as_container(value):
    from omegaconf import DictConfig
    from omegaconf import ListConfig
    from omegaconf import OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def evaluate_experiment(
    cfg,
    parent_run_id,
    rows,
    table="imagenet",
    scale="full",
    family="",
    resize=None,
    scales=None,
    batch_size=32,
    max_images=None,
    experiment_name=DEFAULT_EXPERIMENT,
    dataset=None,
    models_by_run=None,
):
    """`report:` hook: evaluates the trained models for every table row.

    The trained models are the child runs of `parent_run_id` (one per seed or
    variant, in start order) or, without children, the run itself. Each row
    picks `members` of them (`all`, a count, or a list of variant names) and a
    `protocol`, and becomes one MLflow evaluation run tagged with the row
    name, table, scale, family and the paper's numbers.

    Args:
        cfg: the experiment's composed config (its `data` node gives the
            validation images).
        parent_run_id: the training run (or the parent of the seed runs).
        rows: list of dicts `{row, protocol, members=all, order,
            paper_top1_error, paper_top5_error, family}`.
        table: table name tag (`imagenet`).
        scale: `full` (ImageNet) or `mini` (Imagenette).
        family: default family tag of the rows.
        resize: test shorter side (default: `data.resize_size` or
            256/224 of the crop).
        scales: `multi_crop` shorter sides (default 256-352 scaled).
        batch_size: images per prediction batch.
        max_images: evaluate the first `max_images` validation images only.
        experiment_name: MLflow experiment of the evaluation runs.
        dataset: optional unbatched `tf.data` overriding `cfg.data`.
        models_by_run: optional `{run_id: keras.Model}` (tests).

    Returns:
        list of dicts (row, evaluation run id and metrics).
    """
    from mlflow import MlflowClient

    rows = _as_container(rows)
    scales = _as_container(scales)
    run_ids = _child_runs(parent_run_id) or [parent_run_id]
    variants = {
        rid: MlflowClient().get_run(rid).data.tags.get("variant")
        for rid in run_ids
    }
    models_by_run = dict(models_by_run or {})
    if dataset is None:
        dataset, _ = eval_dataset(cfg.data, max_images)
    if resize is None and cfg is not None and "data" in cfg:
        resize = cfg.data.get("resize_size")
    results = []
    cache = {}  # (run id, protocol) -> (logits (1, views, N, K), labels)
    for row in rows:
        members = row.get("members", "all")
        if members == "all":
            chosen = run_ids
        elif isinstance(members, (list, tuple)):
            chosen = [r for r in run_ids if variants[r] in members]
        else:
            chosen = run_ids[: int(members)]
        if not chosen:
            raise ValueError(
                "A table row selects no trained run; check its `members`. "
                f"Received: members={members!r}, runs={run_ids}"
            )
        per_model = []
        for rid in chosen:  # each model predicts each protocol once
            key = (rid, row["protocol"])
            if key not in cache:
                if rid not in models_by_run:
                    models_by_run[rid] = load_model(rid)
                cache[key] = predict_logits(
                    [models_by_run[rid]],
                    dataset,
                    row["protocol"],
                    resize=resize,
                    scales=scales,
                    batch_size=batch_size,
                    max_images=max_images,
                )
            per_model.append(cache[key][0][0])
        result = score(np.stack(per_model), cache[key][1])
        tags = {
            "table": table,
            "scale": scale,
            "family": row.get("family", family),
            "order": row.get("order", len(results)),
            "source_parent_run_id": parent_run_id,
        }
        for key in ("paper_top1_error", "paper_top5_error", "paper_source"):
            if row.get(key) is not None:
                tags[key] = row[key]
        eval_id = log_evaluation(
            result,
            chosen,
            row["protocol"],
            experiment_name=experiment_name,
            row=row["row"],
            tags=tags,
            params={"resize": resize, "scales": scales},
        )
        results.append({"row": row["row"], "run_id": eval_id, **result})
        print(
            f"[evaluate] {row['row']} ({row['protocol']}, {len(chosen)} "
            f"model(s), {result['num_images']} images): top-1 "
            f"{result['top1_error']:.2f}% top-5 {result['top5_error']:.2f}%"
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
        "--experiment",
        default=None,
        help="conf/experiment name whose data config gives the val images",
    )
    p.add_argument(
        "--data",
        default=None,
        help="conf/data name (instead of --experiment), e.g. imagenette",
    )
    p.add_argument(
        "--override",
        action="append",
        default=[],
        help="extra Hydra override (repeatable), e.g. data.decode_size=72",
    )
    p.add_argument("--resize", type=int, default=None)
    p.add_argument("--scales", type=int, nargs="+", default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--row", default=None, help="table row name (tag)")
    p.add_argument("--family", default="")
    p.add_argument("--table", default="imagenet")
    p.add_argument("--scale", default="mini", choices=("mini", "full"))
    p.add_argument("--paper-top1-error", type=float, default=None)
    p.add_argument("--paper-top5-error", type=float, default=None)
    p.add_argument("--experiment-name", default=DEFAULT_EXPERIMENT)
    p.add_argument(
        "--tracking-uri", default=None, help="default: the config's tracking"
    )
    return p


def main(argv=None):
    """CLI entry point; prints and returns the result dict."""
    from experiments import tracking
    from experiments.config_schema import compose

    args = _parser().parse_args(argv)
    overrides = list(args.override)
    if args.experiment:
        overrides.insert(0, f"experiment={args.experiment}")
    elif args.data:
        overrides.insert(0, f"data={args.data}")
    else:
        raise ValueError(
            "Say where the validation images come from: --experiment NAME "
            "or --data NAME. Received: experiment=None, data=None"
        )
    cfg = compose(overrides)
    tracking.configure_cli(
        cfg.tracking, args.experiment_name, args.tracking_uri
    )
    models = [load_model(s) for s in args.sources]
    ds, _ = eval_dataset(cfg.data, args.max_images)
    resize = args.resize or cfg.data.get("resize_size")
    result = evaluate(
        models,
        ds,
        args.protocol,
        resize=resize,
        scales=args.scales,
        batch_size=args.batch_size,
        max_images=args.max_images,
    )
    tags = {"table": args.table, "scale": args.scale, "family": args.family}
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
        params={"resize": resize, "scales": args.scales},
    )
    print(result)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
