"""Where the scored models come from: MLflow runs, `.keras` files or our
builders with `keras.applications` weights, and the data config each run
was trained on.

Sources:
- a run id, `runs:/<id>[/...]` or `models:/<name>/<version>`: the first
  `.keras` artifact of the run (what `experiments.engine.train` logs);
- a path to a `.keras` file;
- `keras:<arch>` (`vgg16`, `vgg19`, `resnet50`, `resnet101`, `resnet152`):
  our builder with `keras.applications` weights
  (`models.keras_applications.build_with_keras_weights`), for checking our
  protocols against published Keras numbers.

`mlflow.keras.load_model` needs a model logged with `mlflow.keras.log_model`
(an MLmodel folder); the engine logs a plain `.keras` artifact, so it is
found and loaded with `keras.saving.load_model` here.
"""

import os
import tempfile

KERAS_PREFIX = "keras:"
KERAS_ARCHS = ("vgg16", "vgg19", "resnet50", "resnet101", "resnet152")
# Data keys that do not change what an image looks like to the model (where
# it is read from, batching, training-only augmentation, crop geometry that
# the test protocol sets); every other `data.*` key must match the run's.
DATA_KEYS_IGNORED = (
    "_target_",
    "augment",
    "batch_size",
    "cache",
    "crop_size",
    "download",
    "eval_batch_size",
    "eval_split",
    "input_shape",
    "lighting_std",
    "local_dir",
    "manual_dir",
    "num_train_examples",
    "num_val_examples",
    "resize_size",
    "scale_range",
    "seed",
    "source",
    "tfds_data_dir",
    "tuning_per_class",
    "val_crop",
)


def is_keras_source(source):
    """True for `keras:<arch>` sources."""
    return str(source).startswith(KERAS_PREFIX)


def is_run_source(source):
    """True when `source` names an MLflow run (not a file or `keras:`)."""
    source = str(source)
    return not (is_keras_source(source) or source.endswith(".keras"))


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


def training_fraction(sources):
    """The fraction of its experiment's steps the scored models trained for.

    A table never mixes training lengths (`reports.imagenet_rows`), so an
    evaluation is tagged with this. A run source reads the run's logged
    `extras.fraction` param (set by `--fraction` of the table runner; a run
    without it trained its config's full length, 1.0); `keras:` weights are
    published, fully trained models (1.0); a `.keras` file does not say.

    Args:
        sources: the scored sources (see the module docstring).

    Returns:
        float, or None when a `.keras` file is among the sources.

    Raises:
        ValueError: the models were trained for different fractions.
    """
    from mlflow import MlflowClient

    found = set()
    for source in map(str, sources):
        if is_keras_source(source):
            found.add(1.0)
        elif source.endswith(".keras"):
            return None
        else:
            params = MlflowClient().get_run(resolve_run_id(source)).data.params
            found.add(float(params.get("extras.fraction", 1.0)))
    if len(found) > 1:
        raise ValueError(
            "An ensemble's models must be trained for the same fraction of "
            "their steps; re-run the shorter ones. Received: fractions="
            f"{sorted(found)}"
        )
    return found.pop() if found else None


def _find_keras_artifact(client, run_id, path=None):
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            found = _find_keras_artifact(client, run_id, info.path)
            if found:
                return found
        elif info.path.endswith(".keras"):
            return info.path
    return None


def load_model(
    source, dst_dir=None, keras_weights=None, num_classes=1000, data_cfg=None
):
    """Loads a Keras model from a `.keras` path, an MLflow run or `keras:`.

    Models are loaded with `compile=False`: scoring needs the forward pass
    only, and the training compile state (optimizer, the engine's
    `SparseTopKAccuracy`) is not rebuilt.

    Args:
        source: see the module docstring.
        dst_dir: download folder, kept; by default a temporary one,
            removed once the model is loaded.
        keras_weights: `keras:` sources only: `"imagenet"`, a weights file
            path, or None (random weights, for offline tests).
        num_classes: `keras:` sources only: classifier width.
        data_cfg: `keras:` sources only: the data config scored (input
            size and normalisation folded into the first conv).

    Returns:
        `keras.Model`.
    """
    import keras
    import mlflow
    from mlflow import MlflowClient

    from convnet_repro import layers  # noqa: F401  (registers the custom layers)
    from convnet_repro import models  # noqa: F401  (registers model-level custom objects)

    source = str(source)
    if is_keras_source(source):
        return build_keras_source(source, keras_weights, num_classes, data_cfg)
    if source.endswith(".keras"):
        if not os.path.exists(source):
            raise ValueError(
                f"No such .keras file; check the path. Received: {source!r}"
            )
        return keras.saving.load_model(source, compile=False)
    run_id = resolve_run_id(source)
    artifact = _find_keras_artifact(MlflowClient(), run_id)
    if artifact is None:
        raise ValueError(
            "The run has no .keras artifact; train it with "
            "python -m convnet_repro.experiments.train "
            f"(which logs the final model). Received: source={source!r}"
        )
    if dst_dir is not None:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact, dst_path=dst_dir
        )
        return keras.saving.load_model(local, compile=False)
    # The loaded model no longer needs its file: a scratch folder that is
    # removed (each download is a whole model, 0.5-1 GB at full size).
    with tempfile.TemporaryDirectory(prefix="evaluate_") as scratch:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact, dst_path=scratch
        )
        return keras.saving.load_model(local, compile=False)


def build_keras_source(source, weights=None, num_classes=1000, data_cfg=None):
    """Our VGG/ResNet builder carrying `keras.applications` weights.

    The weights' input convention (caffe: BGR, 0-255, minus the mean BGR)
    is folded into the first conv by
    `models.keras_applications.build_with_keras_weights`, for the data
    config's `rescale`/`mean`/`std` (see `keras_data_overrides`).

    Args:
        source: `keras:<arch>`.
        weights: None (random), `"imagenet"` or a weights file.
        num_classes: classifier width (1000 for published weights).
        data_cfg: the data config the model will see (its `input_shape`,
            `rescale`, `mean`, `std`); None: 224 px, 1/255, caffe mean.
    """
    arch = source[len(KERAS_PREFIX) :]
    if arch not in KERAS_ARCHS:
        raise ValueError(
            f"Unknown keras: model; use one of {list(KERAS_ARCHS)}. "
            f"Received: source={source!r}"
        )
    from convnet_repro.models.keras_applications import build_with_keras_weights

    data = dict(data_cfg or {})
    kwargs = {
        k: data[k]
        for k in ("rescale", "mean", "std")
        if data.get(k) is not None
    }
    if data.get("input_shape"):
        kwargs["input_shape"] = tuple(data["input_shape"])
    return build_with_keras_weights(
        arch, weights=weights, num_classes=num_classes, **kwargs
    )


def keras_data_overrides(rescale):
    """Hydra overrides giving `keras:` sources the input their weights
    were trained on: the caffe mean RGB in the pipeline's units, no std."""
    from convnet_repro.models.keras_applications import keras_data_settings

    mean = keras_data_settings(float(rescale))["mean"]
    return [f"data.mean=[{','.join(repr(m) for m in mean)}]", "data.std=null"]


def data_mismatch(run_params, data_cfg):
    """The `data.*` keys where the requested config differs from a run's.

    Args:
        run_params: the run's MLflow params (`experiments.engine.tracking.
            log_config` logs the flattened resolved config as strings).
        data_cfg: the requested data config (dict or `DictConfig`).

    Returns:
        dict `{key: (run value, requested value)}`; empty when they agree
        (keys the run did not log, and `DATA_KEYS_IGNORED`, are skipped).
    """
    from omegaconf import DictConfig
    from omegaconf import OmegaConf

    from convnet_repro.experiments.engine.tracking import flatten

    if isinstance(data_cfg, DictConfig):
        data_cfg = OmegaConf.to_container(data_cfg, resolve=True)
    requested = flatten(dict(data_cfg), prefix="data.")
    differing = {}
    for key, value in requested.items():
        name = key.split(".")[1]
        if name in DATA_KEYS_IGNORED or key not in run_params:
            continue
        if str(value)[:6000] != run_params[key]:
            differing[key] = (run_params[key], value)
    return differing


def check_data_config(sources, data_cfg, allow_mismatch=False):
    """Refuses to score runs on a data config unlike their training data.

    Args:
        sources: the scored sources (runs are checked; files and `keras:`
            sources carry no training config).
        data_cfg: the requested data config.
        allow_mismatch: only warn (`--allow-data-mismatch`).

    Raises:
        ValueError: one line naming the run, the differing keys and the
            override flag.
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    for source in sources:
        if not is_run_source(source):
            continue
        run_id = resolve_run_id(str(source))
        differing = data_mismatch(client.get_run(run_id).data.params, data_cfg)
        if not differing:
            continue
        detail = ", ".join(
            f"{k}: run {a!r} vs requested {b!r}"
            for k, (a, b) in sorted(differing.items())
        )
        message = (
            f"Run {run_id} was trained on other data than requested "
            f"({detail}); score it with its own --experiment/--data and "
            "--override, or pass --allow-data-mismatch. Received: "
            f"source={source!r}"
        )
        if not allow_mismatch:
            raise ValueError(message)
        print(f"[evaluate] warning: {message}")
