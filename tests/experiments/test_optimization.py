"""The engine's optimizer, schedule and compile settings, from the config,
checked against the update formulas on a tiny variable."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from omegaconf import OmegaConf

from convnet_repro.experiments.engine import optimization
from convnet_repro.experiments.engine.compose import compose
from convnet_repro.models.tiny import build_engine_mlp

SMOKE = ["experiment=smoke"]
GRADIENTS = [np.array([0.5, -1.0, 2.0]), np.array([-0.25, 0.75, 1.5])]
W0 = np.array([1.0, -2.0, 0.5])


def _steps(name, **params):
    """Builds optimizer `name` with `params` (`optimizer.<key>=<value>`
    overrides) through the engine and applies GRADIENTS to a variable
    starting at W0; returns the variable after each step."""
    overrides = [f"optimizer.{key}={value}" for key, value in params.items()]
    cfg = compose(SMOKE + [f"optimizer={name}", *overrides])
    learning_rate, _ = optimization.build_learning_rate(cfg)
    optimizer = optimization.build_optimizer(cfg, learning_rate)
    w = keras.Variable(W0.astype("float32"))
    after = []
    for g in GRADIENTS:
        optimizer.apply_gradients(
            [(keras.ops.convert_to_tensor(g, "float32"), w)]
        )
        after.append(keras.ops.convert_to_numpy(w).astype("float64"))
    return after


def _check(after, expected):
    for step, (got, want) in enumerate(zip(after, expected), 1):
        np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=step)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_and_nesterov_follow_their_formulas(nesterov):
    """v <- mu v - lr g; heavy ball w <- w + v, Nesterov (Sutskever et al.
    2013, Keras' form) w <- w + mu v - lr g."""
    lr, mu = 0.1, 0.7
    nesterov_flag = str(nesterov).lower()
    after = _steps("sgd", learning_rate=lr, momentum=mu, nesterov=nesterov_flag)
    w, v, expected = W0.copy(), np.zeros(3), []
    for g in GRADIENTS:
        v = mu * v - lr * g
        w = w + (mu * v - lr * g if nesterov else v)
        expected.append(w)
    _check(after, expected)
    # The first step tells the two apart: -lr g (1 + mu) vs -lr g.
    factor = 1 + mu if nesterov else 1.0
    np.testing.assert_allclose(after[0], W0 - lr * factor * GRADIENTS[0])


def test_adam_follows_kingma_ba_algorithm_1():
    """m, v moving averages with bias correction folded into the step
    size: w <- w - lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)."""
    lr, b1, b2, eps = 0.01, 0.8, 0.95, 1e-3
    after = _steps("adam", learning_rate=lr, beta_1=b1, beta_2=b2, epsilon=eps)
    w, m, v, expected = W0.copy(), np.zeros(3), np.zeros(3), []
    for t, g in enumerate(GRADIENTS, 1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        w = w - alpha * m / (np.sqrt(v) + eps)
        expected.append(w)
    _check(after, expected)


def test_rmsprop_with_momentum_follows_its_formula():
    """v <- rho v + (1 - rho) g^2; p <- mu p + lr g / sqrt(v + eps);
    w <- w - p (Tieleman & Hinton 2012, Keras' form)."""
    lr, rho, mu, eps = 0.01, 0.7, 0.5, 1e-4
    after = _steps(
        "rmsprop", learning_rate=lr, rho=rho, momentum=mu, epsilon=eps
    )
    w, v, p, expected = W0.copy(), np.zeros(3), np.zeros(3), []
    for g in GRADIENTS:
        v = rho * v + (1 - rho) * g**2
        p = mu * p + lr * g / np.sqrt(v + eps)
        w = w - p
        expected.append(w)
    _check(after, expected)


def test_staircase_exponential_decay_drops_at_whole_periods():
    """lr * rate ** floor(step / decay_steps), read by the optimizer at its
    own iteration count."""
    cfg = compose(
        SMOKE
        + [
            "schedule=exponential",
            "schedule.decay_steps=10",
            "schedule.decay_rate=0.5",
            "schedule.staircase=true",
        ]
    )
    learning_rate, callback = optimization.build_learning_rate(cfg)
    assert callback is None
    optimizer = optimization.build_optimizer(cfg, learning_rate)
    optimizer.build([keras.Variable(np.zeros(2, "float32"))])
    for step in (0, 1, 9, 10, 19, 20, 35):
        optimizer.iterations.assign(step)
        got = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        assert got == pytest.approx(0.05 * 0.5 ** (step // 10)), step


class _NumpyIdentity(keras.layers.Layer):
    """An identity through `tf.numpy_function`, which XLA cannot compile."""

    def call(self, x):
        y = tf.numpy_function(lambda a: a, [x], tf.float32)
        y.set_shape(x.shape)
        return y


@pytest.mark.parametrize("jit", [False, True])
def test_jit_compile_true_compiles_the_train_step_with_xla(jit):
    """`trainer.jit_compile=true` reaches `model.compile`, and the train
    step really goes through XLA: an op XLA cannot compile then fails."""
    cfg = compose(SMOKE + [f"trainer.jit_compile={str(jit).lower()}"])
    mlp = build_engine_mlp()
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, mlp(_NumpyIdentity()(inputs)))
    optimization.compile_model(model, cfg, keras.optimizers.SGD(0.01))
    assert model.jit_compile is jit
    x, y = np.zeros((4, 8, 8, 1), "float32"), np.zeros(4, "int32")
    if not jit:
        model.train_on_batch(x, y)
        return
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="(?s)unsupported op.*PyFunc"
    ):
        model.train_on_batch(x, y)


@pytest.mark.parametrize(
    "mixed_precision, policy",
    [("none", "float32"), ("bfloat16", "mixed_bfloat16")],
)
def test_dtype_policy_of_the_config_enum_and_of_a_plain_plan(
    mixed_precision, policy
):
    cfg = compose([*SMOKE, f"trainer.mixed_precision={mixed_precision}"])
    assert optimization.dtype_policy_name(cfg.trainer) == policy
    # device_steps' plan: the enum's name, as `to_container` writes it.
    plan = OmegaConf.create(
        OmegaConf.to_container(cfg.trainer, resolve=True, enum_to_str=True)
    )
    assert plan.mixed_precision == mixed_precision
    assert optimization.dtype_policy_name(plan) == policy


@pytest.mark.parametrize("style, expected", [("l2", 2), ("decoupled", 0)])
def test_weight_decay_is_a_loss_term_only_in_the_l2_style(style, expected):
    cfg = compose(
        [
            *SMOKE,
            "optimizer.weight_decay=0.001",
            f"optimizer.weight_decay_style={style}",
        ]
    )
    model = build_engine_mlp(num_classes=3, hidden_units=5)
    assert optimization.apply_weight_decay(model, cfg.optimizer) == expected
    assert len(model.losses) == expected
