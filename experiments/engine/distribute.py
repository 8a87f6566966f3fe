"""`tf.distribute` plumbing of the engine: the strategy, the chief test.

The strategy of `trainer.strategy`, which process is the chief and the
dataset sharding options. The steps per compiled call a strategy allows
are `optimization.effective_steps_per_execution` (it needs no TensorFlow);
the Keras patches that multi-device strategies need are in
`experiments.engine.compat`.
"""

import tensorflow as tf

from convnet_repro.experiments.engine.config_schema import Strategy


def _split_cpu(n):
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * n
        )
    except RuntimeError:
        # Already initialized: keep the existing split (same process).
        pass


def make_strategy(trainer):
    """`tf.distribute` strategy of `trainer.strategy`.

    Args:
        trainer: the trainer config.

    Returns:
        A `tf.distribute.Strategy`.
    """
    if trainer.logical_cpu_devices:
        _split_cpu(trainer.logical_cpu_devices)
    kind = trainer.strategy
    if kind == Strategy.default:
        return tf.distribute.get_strategy()
    if kind == Strategy.mirrored:
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        if not devices:
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if kind == Strategy.multi_worker:
        from convnet_repro.experiments.engine.compat import (
            patch_multi_worker_reduce,
        )

        patch_multi_worker_reduce()
        # Reads TF_CONFIG; every worker runs the same command.
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy):
    """True unless this is a non-chief worker of a multi-worker job."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return (
        resolver.task_type == "worker"
        and resolver.task_id == 0
        and (not has_chief)
    )


def distribute_options(ds, strategy_kind):
    if strategy_kind != Strategy.multi_worker:
        return ds
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return ds.with_options(options)
