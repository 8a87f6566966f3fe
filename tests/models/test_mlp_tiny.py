"""BN-MNIST MLP (BN paper Sec. 4.1) and the tiny engine-test CNN."""

import keras
import numpy as np
import pytest

from convnet_repro import models
from convnet_repro.models.mlp import build_bn_mnist_mlp
from convnet_repro.models.tiny import build_tiny_cnn


def test_mlp_layer_names_and_count():
    model = build_bn_mnist_mlp()
    names = [layer.name for layer in model.layers]
    for i in (1, 2, 3):
        for suffix in ("dense", "bn", "act"):
            assert f"hidden{i}_{suffix}" in names
        # BN subsumes the bias (Sec. 3.2).
        assert model.get_layer(f"hidden{i}_dense").bias is None
        assert isinstance(
            model.get_layer(f"hidden{i}_act"), keras.layers.Activation
        )
    assert names[-1] == "logits"
    # 784*100 + 2*100*100 + (100*10 + 10) weights + 3 BN layers * 4 * 100.
    assert model.count_params() == 784 * 100 + 2 * 100**2 + 1010 + 3 * 400
    assert model.output_shape == (None, 10)


def test_mlp_without_bn_has_biases_and_no_bn():
    model = build_bn_mnist_mlp(batch_norm=False)
    names = [layer.name for layer in model.layers]
    assert not any(n.endswith("_bn") for n in names)
    assert model.get_layer("hidden1_dense").bias is not None
    assert model.count_params() == 784 * 100 + 2 * 100**2 + 1010 + 300


def test_mlp_forward_matches_numpy_formula():
    model = build_bn_mnist_mlp(batch_norm=False, hidden_units=(5, 4))
    x = np.random.default_rng(0).random((3, 28, 28, 1)).astype("float32")
    h = x.reshape(3, -1)
    for i in (1, 2):
        w, b = model.get_layer(f"hidden{i}_dense").get_weights()
        h = 1.0 / (1.0 + np.exp(-(h @ w + b)))
    w, b = model.get_layer("logits").get_weights()
    np.testing.assert_allclose(model(x).numpy(), h @ w + b, atol=1e-5)


def test_mlp_kernel_init_stddev():
    model = build_bn_mnist_mlp(kernel_init_stddev=0.05)
    w = model.get_layer("hidden1_dense").get_weights()[0]
    assert abs(w.std() - 0.05) < 0.005
    assert abs(w.mean()) < 0.005


def test_mlp_bad_input():
    with pytest.raises(ValueError, match="Received: hidden_units"):
        build_bn_mnist_mlp(hidden_units=())


def test_tiny_cnn_shapes_and_registry():
    model = models.build("tiny_cnn", input_shape=(12, 12, 1), num_classes=7)
    out = model(np.zeros((2, 12, 12, 1), "float32"))
    assert out.shape == (2, 7)
    # conv1 3*3*1*8+8, conv2 3*3*8*16+16, dense 16*7+7.
    assert model.count_params() == 80 + 1168 + 119
    with pytest.raises(ValueError, match="Received: name"):
        models.build("nope")


def test_tiny_cnn_bad_stage():
    with pytest.raises(ValueError, match="Received: stages"):
        build_tiny_cnn((12, 12, 1), 3, conv={"stages": ["conv9"]})
