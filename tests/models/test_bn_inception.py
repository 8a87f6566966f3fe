"""BN-Inception builder (BN paper Sec. 4.2, Figure 5; PAPERS.md 2)."""

import keras
import numpy as np
import pytest

from convnet_repro import layers
from convnet_repro.models.bn_inception import MODULES
from convnet_repro.models.bn_inception import build_bn_inception
from tests.models.helpers import assert_conv_pads_symmetrically
from tests.models.helpers import conv_params
from tests.models.helpers import forward_and_train_step
from tests.models.helpers import kernel_initializers
from tests.models.helpers import output_shapes
from tests.models.helpers import roundtrip
from tests.models.helpers import train_step
from tests.models.helpers import trainable_count

SMALL = dict(
    input_shape=(32, 32, 3), num_classes=10, small_input=True,
    width_multiplier=0.125,
)  # fmt: skip


def _module_trainable(c_in, widths):
    """Figure 5 module: convs without bias, each followed by BN (2 per map)."""
    c1, c3r, c3, d3r, d3, _, proj, _ = widths

    def unit(k, i, o):
        return k * k * i * o + 2 * o

    total = unit(1, c_in, c3r) + unit(3, c3r, c3)
    total += unit(1, c_in, d3r) + unit(3, d3r, d3) + unit(3, d3, d3)
    if c1:
        total += unit(1, c_in, c1)
    if proj:
        total += unit(1, c_in, proj)
    return total


def _table_trainable():
    """Whole-net count from the Figure 5 widths (our convention)."""
    stem = 7 * 7 * 3 * 8 + 24 * 64 + 2 * 64  # separable conv1 + BN
    stem += (64 * 64 + 2 * 64) + (9 * 64 * 192 + 2 * 192)
    c, total = 192, stem
    for name, widths in MODULES.items():
        total += _module_trainable(c, widths)
        c1, _, c3, _, d3, _, proj, _ = widths
        c = c1 + c3 + d3 + (proj if proj else c)
    return total + c * 1000 + 1000, c


def test_count_matches_table_convention_and_shapes():
    model = build_bn_inception(lrn=False)
    expected, final_channels = _table_trainable()
    assert final_channels == 1024
    assert trainable_count(model) == expected == 11_278_528
    shapes = output_shapes(
        model,
        ["pool2", "inception3b", "inception3c", "inception4c",
         "inception4e", "inception5b"],
    )  # fmt: skip
    # 4c is 608 wide and 4e 1056 with the table's widths (paper prints
    # 576 / 1024); 3c and 4e downsample inside the module.
    assert shapes == {
        "pool2": (28, 28, 192),
        "inception3b": (28, 28, 320),
        "inception3c": (14, 14, 576),
        "inception4c": (14, 14, 608),
        "inception4e": (7, 7, 1056),
        "inception5b": (7, 7, 1024),
    }
    dense = build_bn_inception(lrn=False, separable_conv1=False)
    assert trainable_count(dense) - expected == (7 * 7 * 3 * 64) - (
        7 * 7 * 3 * 8 + 24 * 64
    )


def test_strided_convs_pad_like_caffe():
    model = build_bn_inception(lrn=False, separable_conv1=False)
    x = np.random.default_rng(0).random((1, 224, 224, 3)).astype("float32")
    assert_conv_pads_symmetrically(model, "conv1", 3, x)
    # Module 3c's stride-2 3x3 convs (28 -> 14) pad 1 on every side.
    assert_conv_pads_symmetrically(model, "inception3c_3x3", 1, x)
    assert_conv_pads_symmetrically(model, "inception3c_double3x3b", 1, x)


def test_switches():
    def kinds(model, cls):
        return [la for la in model.layers if isinstance(la, cls)]

    base = build_bn_inception(**SMALL)
    assert len(kinds(base, layers.LocalResponseNormalization)) == 2
    assert len(kinds(base, keras.layers.Dropout)) == 1
    n_bn = len(kinds(base, keras.layers.BatchNormalization))
    convs = [la for la in base.layers if la.name.endswith("_conv")]
    assert n_bn == len(convs)  # BN after every conv
    assert all(not la.use_bias for la in convs)
    plain = build_bn_inception(
        batch_norm=False, lrn=False, dropout=0.0, **SMALL
    )
    assert not kinds(plain, keras.layers.BatchNormalization)
    assert not kinds(plain, layers.LocalResponseNormalization)
    assert not kinds(plain, keras.layers.Dropout)
    assert all(la.use_bias for la in plain.layers if la.name.endswith("_conv"))
    sig = build_bn_inception(activation="sigmoid", **SMALL)
    acts = kinds(sig, keras.layers.Activation)
    assert acts and all(
        la.activation is keras.activations.sigmoid for la in acts
    )
    # avg/max pooling per module (Figure 5).
    assert isinstance(base.get_layer("inception4a_pool"),
                      keras.layers.AveragePooling2D)  # fmt: skip
    assert isinstance(base.get_layer("inception5b_pool"),
                      keras.layers.MaxPooling2D)  # fmt: skip


def test_kernel_initializer_reaches_every_kernel():
    model = build_bn_inception(
        kernel_initializer="he_normal", conv={"kind": "tiled",
        "stages": ["inception5"]}, **SMALL,
    )  # fmt: skip
    inits = kernel_initializers(model)
    assert len(inits) > 40
    assert all(isinstance(i, keras.initializers.HeNormal) for i in inits)


def test_he_init_passes_the_input_through_without_bn():
    """Why the mini experiment uses He init: with Glorot the no-BN net's
    features hardly depend on the input (vanishing signal, ~30 ReLU
    layers); He init keeps two orders of magnitude more of it."""
    x = np.random.default_rng(0).uniform(-1, 1, (32, 32, 32, 3))

    def spread(init):
        keras.utils.set_random_seed(0)
        model = build_bn_inception(
            batch_norm=False, kernel_initializer=init, **SMALL
        )
        features = keras.Model(model.input, model.get_layer("avg_pool").output)
        return float(np.std(features(x.astype("float32")), axis=0).mean())

    assert spread("he_normal") > 30 * spread("glorot_uniform")


@pytest.mark.parametrize("kind", ["conv2d", "unshared", "tiled"])
def test_small_train_step_every_kind(kind):
    model = build_bn_inception(conv={"kind": kind}, **SMALL)
    forward_and_train_step(model)


def test_sigmoid_without_bn_train_step():
    model = build_bn_inception(batch_norm=False, activation="sigmoid", **SMALL)
    x = np.random.default_rng(1).random((2, 32, 32, 3)).astype("float32")
    train_step(model, x, 10)


@pytest.mark.parametrize("kind", ["unshared", "tiled"])
def test_stage_swap_changes_count_by_formula(kind):
    base = build_bn_inception(**SMALL).count_params()
    swapped = build_bn_inception(
        conv={"kind": kind, "stages": ["conv2"]}, **SMALL
    )
    # Small stem: conv2 at 32x32, 1x1 8 -> 8 and 3x3 8 -> 24, no bias (BN).
    delta = sum(
        conv_params(kind, (32, 32), k, c, f, bias=False)
        - conv_params("conv2d", (32, 32), k, c, f, bias=False)
        for k, c, f in ((1, 8, 8), (3, 8, 24))
    )
    assert swapped.count_params() - base == delta


def test_roundtrip(tmp_path):
    model = build_bn_inception(
        conv={"kind": "tiled", "stages": ["inception3"]}, **SMALL
    )
    roundtrip(model, tmp_path)


def test_bad_arguments():
    with pytest.raises(ValueError, match="Received: dropout"):
        build_bn_inception(dropout=1.5)
    with pytest.raises(ValueError, match="Received: stages"):
        build_bn_inception(conv={"stages": ["inception6"]})
