"""Optimizer, learning-rate schedule, paper-style L2 and `model.compile`
of the training engine (`conf/optimizer/`, `conf/schedule/`)."""

import keras

from experiments.engine.compat import model_supports_jit
from experiments.engine.config_checks import optimizer_kwargs
from experiments.engine.config_schema import ConfigError
from experiments.engine.config_schema import OptimizerName
from experiments.engine.config_schema import ScheduleName
from experiments.engine.distribute import effective_steps_per_execution

_OPTIMIZERS = {
    OptimizerName.sgd: keras.optimizers.SGD,
    OptimizerName.adam: keras.optimizers.Adam,
    OptimizerName.rmsprop: keras.optimizers.RMSprop,
}


def build_learning_rate(cfg):
    """Learning rate (float or Keras schedule) and optional LR callback.

    Schedules: constant; step (x `gamma` at each boundary, the papers'
    "divide by 10"); exponential (`decay_rate ** (step / decay_steps)`,
    `staircase` for integer powers; BN paper 4.2.1 "decay 6x faster" is
    `decay_steps / 6`); plateau (`ReduceLROnPlateau` on `monitor`, checked at
    evaluations; AlexNet/VGG "divide by 10 when val error stops improving").
    """
    lr = float(cfg.optimizer.learning_rate)
    s = cfg.schedule
    if s.name == ScheduleName.constant:
        return lr, None
    if s.name == ScheduleName.step:
        values = [lr * s.gamma**i for i in range(len(s.boundaries) + 1)]
        return (
            keras.optimizers.schedules.PiecewiseConstantDecay(
                [int(b) for b in s.boundaries], values
            ),
            None,
        )
    if s.name == ScheduleName.exponential:
        return (
            keras.optimizers.schedules.ExponentialDecay(
                lr, s.decay_steps, s.decay_rate, staircase=s.staircase
            ),
            None,
        )
    callback = keras.callbacks.ReduceLROnPlateau(
        monitor=s.monitor,
        factor=s.factor,
        patience=s.patience,
        cooldown=s.cooldown,
        min_delta=s.min_delta,
        min_lr=s.min_lr,
        verbose=0,
    )
    return lr, callback


def build_optimizer(cfg, learning_rate):
    o = cfg.optimizer
    return _OPTIMIZERS[o.name](
        learning_rate=learning_rate, **optimizer_kwargs(o)
    )


def add_l2_weight_decay(model, weight_decay):
    """Paper-style weight decay: `weight_decay / 2 * ||W||^2` per kernel.

    Its gradient is `weight_decay * W`, the update of AlexNet Sec. 5 / Caffe.
    Applied to kernels (conv, dense, depthwise) only, not to biases or BN
    parameters.

    Returns:
        The number of regularized variables.
    """
    count = 0
    regularizer = keras.regularizers.L2(weight_decay / 2.0)
    for variable in model.trainable_variables:
        if variable.path.split("/")[-1].endswith("kernel"):
            variable.regularizer = regularizer
            count += 1
    return count


@keras.saving.register_keras_serializable(package="repro")
class SparseTopKAccuracy(keras.metrics.SparseTopKCategoricalAccuracy):
    """`SparseTopKCategoricalAccuracy` that accepts float16/bfloat16 logits.

    `tf.math.in_top_k` only takes float32, so mixed-precision logits are
    cast first.
    """

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = keras.ops.cast(y_pred, "float32")
        return super().update_state(y_true, y_pred, sample_weight)


def compile_model(model, cfg, optimizer):
    """Compiles with sparse CE from logits and top-1/top-k accuracy."""
    t = cfg.trainer
    metrics = [keras.metrics.SparseCategoricalAccuracy(name="top1_accuracy")]
    if t.top_k > 1:
        metrics.append(
            SparseTopKAccuracy(k=t.top_k, name=f"top{t.top_k}_accuracy")
        )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    n_outputs = len(model.outputs)
    loss_weights = None
    if n_outputs > 1:
        if t.loss_weights is None or len(t.loss_weights) != n_outputs:
            raise ConfigError(
                f"the model has {n_outputs} outputs; set trainer.loss_weights "
                f"to {n_outputs} weights (main output first). Received: "
                f"trainer.loss_weights={t.loss_weights}"
            )
        loss = [loss] * n_outputs
        loss_weights = [float(w) for w in t.loss_weights]
        metrics = [metrics] + [[] for _ in range(n_outputs - 1)]
    model.compile(
        optimizer=optimizer,
        loss=loss,
        loss_weights=loss_weights,
        metrics=metrics,
        steps_per_execution=effective_steps_per_execution(t),
        jit_compile=resolve_jit_compile(model, t.jit_compile),
    )
    return model


def resolve_jit_compile(model, requested):
    """`trainer.jit_compile` -> what `model.compile` can honour.

    `None` is Keras' `"auto"` (XLA where the model supports it). `True` is
    kept only where Keras' own `model_supports_jit` says yes: it says no
    while TensorFlow op determinism is on (`trainer.deterministic`) or a
    layer sets `supports_jit = False`, and `compile` would then switch XLA
    off with a "Model doesn't support `jit_compile=True`" warning per run.
    """
    if requested is None:
        return "auto"
    if requested and not model_supports_jit(model):
        return False
    return bool(requested)


def metric_names(model):
    """Keras log key -> logged name (main-output metrics lose the prefix)."""
    names = {}
    if len(model.outputs) > 1:
        main = model.output_names[0] if hasattr(model, "output_names") else ""
        for metric in ("top1_accuracy", "top5_accuracy"):
            names[f"{main}_{metric}"] = metric
    return names


def labels_for(model, ds):
    n = len(model.outputs)
    if n == 1:
        return ds
    return ds.map(lambda x, y: (x, tuple([y] * n)))
