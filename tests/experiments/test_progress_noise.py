"""No start-up noise: XLA is asked for only where Keras supports it."""

import warnings

import keras

from convnet_repro.experiments.engine import optimization


class NoJitDense(keras.layers.Dense):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.supports_jit = False  # as Keras' own non-XLA layers do


def _model(layer):
    inputs = keras.Input((3,))
    return keras.Model(inputs, layer(inputs))


def test_jit_compile_true_is_dropped_where_the_model_cannot_use_xla(caplog):
    model = _model(NoJitDense(2))
    assert optimization.resolve_jit_compile(model, True) is False
    assert optimization.resolve_jit_compile(model, None) == "auto"
    assert optimization.resolve_jit_compile(model, False) is False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.compile(
            "sgd",
            "mse",
            jit_compile=optimization.resolve_jit_compile(model, True),
        )
    assert not [w for w in caught if "jit_compile" in str(w.message)]
    assert model.jit_compile is False


def test_jit_compile_true_is_kept_where_keras_supports_it():
    from keras.src.trainers.trainer import model_supports_jit

    model = _model(keras.layers.Dense(2))
    # Keras says no while TF op determinism is on (the engine's default).
    expected = model_supports_jit(model)
    assert optimization.resolve_jit_compile(model, True) is expected
