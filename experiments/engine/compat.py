"""Every Keras private-API use and monkeypatch of the engine, in one place.

All of them target Keras 3.15 with the TensorFlow backend (the pin in
`pyproject.toml` is `keras>=3.15,<3.16`). `check_keras_version` guards them:
under another Keras version it raises a one-line error naming this module,
so an upgrade re-checks each item below (and
`tests/experiments/test_distributed.py`) instead of patching blind.

1. `model_supports_jit`: Keras' own test behind the "Model doesn't support
   `jit_compile=True`" warning (private path `keras.src.trainers.trainer`).
2. `patch_multi_worker_reduce`: `reduce_per_replica` under
   `MultiWorkerMirroredStrategy` reduces the scalar train logs with
   `strategy.reduce("MEAN", v, axis=0)`, which fails for scalars ("Invalid
   reduction dimension 0 for input with 0 dimensions"). We reduce scalars
   with `axis=None` (the mean over replicas, what Keras does for one-host
   strategies).
3. `patch_symbolic_build`: `fit` under a strategy takes one batch off the
   *training* iterator and `strategy.reduce`s it to build the model: that
   shifts the deterministic data stream by one batch and fails outright
   under `MultiWorkerMirroredStrategy` ("Attempt to convert a value
   (PerReplica) ... to a Tensor"). We build from a batch of a separate
   iterator instead.
"""

import keras
from keras.src.trainers.trainer import model_supports_jit  # noqa: F401

# The patches need TensorFlow; `model_supports_jit` does not, so a model can
# be compiled under JAX without it (`benchmarks.device_steps --plan-in`
# on a JAX-only GPU machine).
if keras.backend.backend() == "tensorflow":
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as _tf_trainer

    _ORIGINAL_REDUCE = _tf_trainer.reduce_per_replica

KERAS_VERSION = "3.15"


def check_keras_version(version=None):
    """Raises `RuntimeError` unless Keras is the version patched here.

    Args:
        version: the version string to check (default: `keras.version()`).
    """
    version = version or keras.version()
    if not version.startswith(KERAS_VERSION + "."):
        raise RuntimeError(
            f"experiments/engine/compat.py patches Keras {KERAS_VERSION}; "
            f"Keras {version} is installed: re-check each patch there (and "
            "tests/experiments/test_distributed.py), then update "
            "KERAS_VERSION."
        )


def _reduce_per_replica(values, strategy, reduction):
    if reduction in ("auto", "mean") and (
        _tf_trainer._collective_all_reduce_multi_worker(strategy)
    ):

        def reduce(v):
            if not _tf_trainer._is_per_replica_instance(v):
                return v
            rank = v.values[0].shape.rank
            return strategy.reduce("MEAN", v, axis=None if rank == 0 else 0)

        return tf.nest.map_structure(reduce, values)
    return _ORIGINAL_REDUCE(values, strategy, reduction)


def patch_multi_worker_reduce():
    """Installs the scalar-safe `reduce_per_replica` (idempotent)."""
    check_keras_version()
    _tf_trainer.reduce_per_replica = _reduce_per_replica


def patch_symbolic_build(model, strategy, sample_ds):
    """Builds metrics/optimizer from a plain batch under a strategy.

    Args:
        model: the compiled model about to `fit`.
        strategy: the `tf.distribute` strategy.
        sample_ds: a dataset whose first batch builds the model.
    """
    if not tf.distribute.has_strategy() and (
        strategy is tf.distribute.get_strategy()
    ):
        return
    check_keras_version()
    sample = next(iter(sample_ds.take(1)))

    def build(iterator=None, data_batch=None):
        with strategy.scope():
            model._symbolic_build(data_batch=sample)

    model._maybe_symbolic_build = build
