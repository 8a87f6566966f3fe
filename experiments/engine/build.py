"""Builds a run's data, model and optimizer before its MLflow run exists.

`experiments.engine.train` calls `build_run` before creating a run (and
`preflight` before creating a multi-run's parent), so a corrupt file, a
model that cannot be built from its config (e.g. `model.conv.kind=unshared`
with a dynamic input) or a bad data setting fails with a one-line error and
leaves no FAILED run behind. Input errors keep their type through Hydra's
`InstantiationException`, so the process exit code says what failed.
"""

import json

import hydra
import keras
import tensorflow as tf
from hydra.errors import InstantiationException

from convnet_repro.experiments.engine import finetune
from convnet_repro.experiments.engine import optimization
from convnet_repro.experiments.engine import tracking
from convnet_repro.experiments.engine.config_schema import ConfigError
from convnet_repro.experiments.engine.exit_codes import DataError
from convnet_repro.experiments.engine.exit_codes import MissingDataError


def seed_and_policy(cfg):
    """Seeds, op determinism and dtype policy of `cfg`; returns the old
    policy's name (to restore). Set before the model is built."""
    t = cfg.trainer
    keras.utils.set_random_seed(int(cfg.seed))
    if t.deterministic:
        tf.config.experimental.enable_op_determinism()
    policy = keras.mixed_precision.dtype_policy().name
    keras.mixed_precision.set_dtype_policy(optimization.dtype_policy_name(t))
    return policy


def instantiate(node, what, **kwargs):
    """`hydra.utils.instantiate`, unwrapping input errors from Hydra's
    `InstantiationException` so they keep their type (and exit code)."""
    try:
        return hydra.utils.instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, (DataError, MissingDataError, ConfigError)):
            raise cause from e
        if isinstance(cause, (ValueError, TypeError)):
            raise ConfigError(
                f"{what} cannot be built from the config: {cause}"
            ) from e
        raise


def wants_tuning_split(node):
    """Whether the engine serves its tuning split to a `callbacks:` node:
    its class takes one (`set_tuning_data`) and the node gives no `data`."""
    if node.get("data") is not None:
        return False
    return hasattr(hydra.utils.get_object(node["_target_"]), "set_tuning_data")


def build_run(cfg, strategy, skip_batches=0):
    """Data, compiled model and LR callback of a run (before any run).

    The train stream starts at batch `skip_batches` (a resumed run's step),
    skipped before decoding (`make_datasets(skip_batches=...)`). The tuning
    split's stream is built by the same call, beside train and val, when a
    config callback scores it (`wants_tuning_split`; else None). With
    `finetune.source` set, a new run (`skip_batches=0`) starts from the
    source's weights (`experiments.engine.finetune`); a resumed one from its own
    checkpoint, restored after this build.

    Returns:
        `(train_ds, val_ds, tuning_ds, model, optimizer, lr_callback)`.
    """
    tuning_ds = None
    if any(map(wants_tuning_split, (cfg.callbacks or {}).values())):
        train_ds, val_ds, tuning_ds = instantiate(
            cfg.data, "data", skip_batches=skip_batches, with_tuning=True
        )
    else:
        train_ds, val_ds = instantiate(
            cfg.data, "data", skip_batches=skip_batches
        )
    with strategy.scope():
        model = instantiate(cfg.model, "model")
        finetune.apply(cfg, model, skip_batches=skip_batches)
        optimization.apply_weight_decay(model, cfg.optimizer)
        learning_rate, lr_callback = optimization.build_learning_rate(cfg)
        optimizer = optimization.build_optimizer(cfg, learning_rate)
        optimizer = finetune.scale_head_gradients(optimizer, model, cfg)
        optimization.compile_model(model, cfg, optimizer)
    return train_ds, val_ds, tuning_ds, model, optimizer, lr_callback


def preflight(children, strategy):
    """Builds each distinct data/model config of `children` once, so that
    input errors stop a multi-run before its parent run exists."""
    seen = set()
    for child in children:
        full = tracking.resolved_container(child.cfg)
        nodes = {k: full[k] for k in ("data", "model", "trainer")}
        nodes["data"].pop("seed", None)
        digest = json.dumps(nodes, sort_keys=True, default=str)
        if digest in seen:
            continue
        seen.add(digest)
        policy = seed_and_policy(child.cfg)
        try:
            build_run(child.cfg, strategy)
        finally:
            keras.mixed_precision.set_dtype_policy(policy)
