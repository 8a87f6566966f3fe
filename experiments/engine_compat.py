"""Workarounds for Keras 3.15 bugs under `tf.distribute` (TF backend).

Each patch is applied only when the engine uses the affected strategy, and
each is checked by `tests/experiments/test_distributed.py`.

1. `reduce_per_replica` under `MultiWorkerMirroredStrategy` reduces the
   scalar train logs with `strategy.reduce("MEAN", v, axis=0)`, which fails
   for scalars ("Invalid reduction dimension 0 for input with 0
   dimensions"). We reduce scalars with `axis=None` (the mean over
   replicas, what Keras does for one-host strategies).
"""

import tensorflow as tf
from keras.src.backend.tensorflow import trainer as _tf_trainer

_ORIGINAL_REDUCE = _tf_trainer.reduce_per_replica


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
    _tf_trainer.reduce_per_replica = _reduce_per_replica
