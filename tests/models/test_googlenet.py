"""GoogLeNet builder (Szegedy et al. 2015, Table 1, Sec. 5; PAPERS.md 5)."""

import keras
import numpy as np
import pytest

from convnet_repro.models.googlenet import AUX_LOSS_WEIGHTS
from convnet_repro.models.googlenet import MODULES
from convnet_repro.models.googlenet import aux_compile_args
from convnet_repro.models.googlenet import aux_targets
from convnet_repro.models.googlenet import build_googlenet
from tests.models.helpers import assert_conv_pads_symmetrically
from tests.models.helpers import conv_params
from tests.models.helpers import kernel_initializers
from tests.models.helpers import output_shapes
from tests.models.helpers import roundtrip
from tests.models.helpers import train_step

SMALL = dict(
    input_shape=(32, 32, 3), num_classes=10, small_input=True,
    width_multiplier=0.125,
)  # fmt: skip


def _module_params(c_in, widths):
    """Table 1 module with biases, from the widths."""
    c1, c3r, c3, c5r, c5, cp = widths
    return (
        (c_in * c1 + c1)
        + (c_in * c3r + c3r) + (9 * c3r * c3 + c3)
        + (c_in * c5r + c5r) + (25 * c5r * c5 + c5)
        + (c_in * cp + cp)
    )  # fmt: skip


def test_paper_count_and_shapes():
    model = build_googlenet()
    assert model.count_params() == 6_998_552
    shapes = output_shapes(
        model,
        ["pool2", "inception3a", "inception3b", "inception4d",
         "inception4e", "inception5b", "logits"],
    )  # fmt: skip
    assert shapes == {
        "pool2": (28, 28, 192),
        "inception3a": (28, 28, 256),
        "inception3b": (28, 28, 480),
        "inception4d": (14, 14, 528),
        "inception4e": (14, 14, 832),
        "inception5b": (7, 7, 1024),
        "logits": (1000,),
    }
    # Module 4a from the widths. (Table 1's params column says 364K; its
    # column sums to ~6.8M, so it is rounded/approximate: not asserted.)
    count = sum(
        layer.count_params() for layer in model.layers
        if layer.name.startswith("inception4a_")
    )  # fmt: skip
    assert count == _module_params(480, MODULES["4a"])
    drop = model.get_layer("dropout")
    assert isinstance(drop, keras.layers.Dropout) and drop.rate == 0.4


def test_conv1_pads_like_caffe():
    # Caffe's conv1 7x7/2 pads 3 on every side (TF "same": 2 then 3).
    model = build_googlenet(lrn=False)
    x = np.random.default_rng(0).random((1, 224, 224, 3)).astype("float32")
    assert_conv_pads_symmetrically(model, "conv1", 3, x)


def test_aux_heads_and_separable_conv1():
    model = build_googlenet(aux_logits=True, lrn=False)
    assert set(model.output) == {"logits", "aux1", "aux2"}

    # Sec. 5 head: 1x1 conv 128, FC 1024, linear; 4x4 map after 5x5/3 pool.
    def head(c_in):
        return (c_in * 128 + 128) + (16 * 128 * 1024 + 1024) + 1025 * 1000

    assert model.count_params() == 6_998_552 + head(512) + head(528)
    assert model.get_layer("aux1_dropout").rate == 0.7
    assert AUX_LOSS_WEIGHTS == {"logits": 1.0, "aux1": 0.3, "aux2": 0.3}
    sep = build_googlenet(separable_conv1=True, lrn=False)
    # 7x7x3 depthwise x8 + 24 -> 64 pointwise + 64 biases (Table 1: 2.7K).
    dense_conv1 = 7 * 7 * 3 * 64 + 64
    sep_conv1 = 7 * 7 * 3 * 8 + 24 * 64 + 64
    assert sep.count_params() == 6_998_552 - dense_conv1 + sep_conv1


def test_kernel_initializer_reaches_every_kernel_and_aux_head():
    model = build_googlenet(
        aux_logits=True, separable_conv1=True, kernel_initializer="he_normal",
        **SMALL,
    )  # fmt: skip
    inits = kernel_initializers(model)
    assert len(inits) > 60
    assert all(isinstance(i, keras.initializers.HeNormal) for i in inits)
    assert isinstance(
        model.get_layer("conv1_conv"), keras.layers.SeparableConv2D
    )


@pytest.mark.parametrize("kind", ["conv2d", "unshared", "tiled"])
def test_small_train_step_every_kind(kind):
    model = build_googlenet(conv={"kind": kind}, aux_logits=True, **SMALL)
    x = np.random.default_rng(1).random((2, 32, 32, 3)).astype("float32")
    out = model(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        k: (2, 10) for k in ("logits", "aux1", "aux2")
    }
    train_step(model, x, 10, loss_weights=AUX_LOSS_WEIGHTS)


@pytest.mark.parametrize("kind", ["unshared", "tiled"])
def test_stage_swap_changes_count_by_formula(kind):
    base = build_googlenet(**SMALL).count_params()
    swapped = build_googlenet(conv={"kind": kind, "stages": ["conv2"]}, **SMALL)
    # Small stem: conv2 runs at 32x32; 1x1 8 -> 8, then 3x3 8 -> 24.
    delta = sum(
        conv_params(kind, (32, 32), k, c, f)
        - conv_params("conv2d", (32, 32), k, c, f)
        for k, c, f in ((1, 8, 8), (3, 8, 24))
    )
    assert swapped.count_params() - base == delta


def test_roundtrip(tmp_path):
    model = build_googlenet(
        aux_logits=True, separable_conv1=True,
        conv={"kind": "tiled", "stages": ["inception5"]}, **SMALL,
    )  # fmt: skip
    roundtrip(model, tmp_path)


def test_aux_model_fits_with_helpers():
    model = build_googlenet(aux_logits=True, lrn=False, **SMALL)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer="sgd", **aux_compile_args(loss))
    x = np.random.default_rng(3).random((4, 32, 32, 3)).astype("float32")
    y = np.arange(4) % 10
    logs = model.train_on_batch(*aux_targets(x, y), return_dict=True)
    aux = logs["aux1_loss"] + logs["aux2_loss"]
    expected = logs["logits_loss"] + 0.3 * aux
    np.testing.assert_allclose(logs["loss"], expected, rtol=1e-4)
    assert "logits_accuracy" in logs
