"""Optimizer, learning-rate schedule, paper-style L2 and `model.compile`.

The optimizer and schedule are Hydra `_target_` nodes (`conf/optimizer/`,
`conf/schedule/`); this module fills in what only the engine knows (the
learning rate, the schedule's start) and compiles the model.
"""

import logging

import hydra
import keras
from omegaconf import OmegaConf

from convnet_repro.experiments.engine import metric_keys as mk
from convnet_repro.experiments.engine.compat import model_supports_jit
from convnet_repro.experiments.engine.config_schema import ConfigError
from convnet_repro.experiments.engine.config_schema import MixedPrecision
from convnet_repro.experiments.engine.config_schema import Strategy

log = logging.getLogger(__name__)

# Optimizer keys the engine reads itself (not arguments of the optimizer).
ENGINE_OPTIMIZER_KEYS = ("weight_decay_style",)


def step_decay(initial_learning_rate, boundaries, gamma):
    """`PiecewiseConstantDecay`: `lr * gamma**k` after the k-th boundary.

    The papers' "divide by 10 at steps ..." (ResNet Sec. 3.4). Keras'
    schedule takes the values per interval; this derives them from one
    learning rate and `gamma` (`conf/schedule/step.yaml`).

    Args:
        initial_learning_rate: the rate before the first boundary.
        boundaries: increasing steps.
        gamma: the factor applied at each boundary.

    Returns:
        A `keras.optimizers.schedules.PiecewiseConstantDecay`.
    """
    values = [
        float(initial_learning_rate) * gamma**i
        for i in range(len(boundaries) + 1)
    ]
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        [int(b) for b in boundaries], values
    )


def build_learning_rate(cfg):
    """Learning rate (float or Keras schedule) and optional LR callback.

    `cfg.schedule` is built by Hydra from its `_target_`
    (`conf/schedule/`): none (constant), a partial schedule called with
    `initial_learning_rate=optimizer.learning_rate` (`step_decay`,
    `ExponentialDecay`; BN paper 4.2.1 "decay 6x faster" is
    `decay_steps / 6`), or a Keras callback (`ReduceLROnPlateau`, AlexNet /
    VGG "divide by 10 when val error stops improving").
    """
    lr = float(cfg.optimizer.learning_rate)
    if "_target_" not in cfg.schedule:
        return lr, None
    built = hydra.utils.instantiate(cfg.schedule, _convert_="all")
    if isinstance(built, keras.callbacks.Callback):
        return lr, built
    return built(initial_learning_rate=lr), None


def build_optimizer(cfg, learning_rate):
    """The Keras optimizer of `cfg.optimizer` (`conf/optimizer/`).

    Every key but `ENGINE_OPTIMIZER_KEYS` is an argument of the
    `_target_`; `weight_decay` goes to Keras only with
    `weight_decay_style: decoupled` (the `l2` style is a loss term,
    `add_l2_weight_decay`).
    """
    node = OmegaConf.to_container(cfg.optimizer, resolve=True)
    style = node.pop("weight_decay_style", "l2")
    if style != "decoupled" or not node.get("weight_decay"):
        node.pop("weight_decay", None)
    node["_partial_"] = True
    factory = hydra.utils.instantiate(node, _convert_="all")
    return factory(learning_rate=learning_rate)


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


def apply_weight_decay(model, optimizer_cfg):
    """The config's weight decay, where it belongs to the loss.

    `weight_decay > 0` with `weight_decay_style: l2` (the default) adds the
    paper-style L2 term (`add_l2_weight_decay`); a decoupled style is the
    optimizer's own (`build_optimizer`) and adds nothing here.

    Returns:
        The number of regularized variables.
    """
    weight_decay = optimizer_cfg.get("weight_decay", 0.0)
    if (
        weight_decay > 0
        and optimizer_cfg.get("weight_decay_style", "l2") == "l2"
    ):
        return add_l2_weight_decay(model, weight_decay)
    return 0


def dtype_policy_name(trainer):
    """The Keras dtype policy of `trainer.mixed_precision`.

    Args:
        trainer: the `trainer` config node; its `mixed_precision` is a
            `MixedPrecision` member, or its name or value as a string (a
            plain plan: `OmegaConf.to_container(enum_to_str=True)` writes
            the name).

    Returns:
        `"float32"` for `none`, else `"mixed_float16"` or
        `"mixed_bfloat16"`.
    """
    value = trainer.mixed_precision
    if not isinstance(value, MixedPrecision):
        value = MixedPrecision.__members__.get(value) or MixedPrecision(value)
    return "float32" if value is MixedPrecision.none else value.value


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
    metrics = [keras.metrics.SparseCategoricalAccuracy(name=mk.TOP1_ACCURACY)]
    if t.top_k > 1:
        metrics.append(
            SparseTopKAccuracy(k=t.top_k, name=mk.accuracy_name(t.top_k))
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
        # Keyed by output name, main first: a positional list would follow
        # Keras' flattened outputs, which sort a dict's keys (GoogLeNet's
        # {"logits", "aux1", "aux2"} -> aux1 first) and so would weigh and
        # score an aux head as the main one.
        names = output_keys(model)
        loss = {name: loss for name in names}
        loss_weights = dict(zip(names, (float(w) for w in t.loss_weights)))
        metrics = {names[0]: metrics}
    model.compile(
        optimizer=optimizer,
        loss=loss,
        loss_weights=loss_weights,
        metrics=metrics,
        steps_per_execution=effective_steps_per_execution(t),
        jit_compile=resolve_jit_compile(model, t.jit_compile),
    )
    return model


def effective_steps_per_execution(trainer):
    """`trainer.steps_per_execution`, or 1 under mirrored/multi-worker.

    Keras 3.15's multi-step `tf.while_loop` over a *distributed* iterator
    fails ("You must feed a value for placeholder tensor ... Placeholder_1"),
    so multi-device strategies run one step per call (a deviation in speed
    only; intervals stay valid since they are multiples of any value).
    """
    if trainer.strategy in (Strategy.mirrored, Strategy.multi_worker):
        if trainer.steps_per_execution != 1:
            log.warning(
                "trainer.steps_per_execution=%d -> 1 under strategy=%s "
                "(Keras multi-step loop bug with distributed iterators).",
                trainer.steps_per_execution,
                trainer.strategy.value,
            )
        return 1
    return trainer.steps_per_execution


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


def output_keys(model):
    """The model's output names, main output first.

    A dict output keeps the order the model built it in (GoogLeNet:
    `logits`, then `aux1`, `aux2`); Keras' `output_names` sorts a dict's
    keys, so it is used only for a list of outputs (its order is theirs).
    """
    if isinstance(model.output, dict):
        return list(model.output)
    return list(model.output_names)


def metric_names(model):
    """Keras log key -> logged name (main-output metrics lose the prefix)."""
    names = {}
    if len(model.outputs) > 1:
        main = output_keys(model)[0]
        for metric in (mk.TOP1_ACCURACY, mk.TOP5_ACCURACY):
            names[f"{main}_{metric}"] = metric
    return names


def labels_for(model, ds):
    """The labels once per model output, keyed as `compile_model` keys the
    losses (`output_keys`)."""
    if len(model.outputs) == 1:
        return ds
    names = output_keys(model)
    return ds.map(lambda x, y: (x, {name: y for name in names}))
