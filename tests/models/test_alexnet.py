"""AlexNet builder (Krizhevsky et al. 2012; PAPERS.md 3)."""

import keras
import numpy as np
import pytest

from convnet_repro.models.alexnet import build_alexnet
from tests.models.helpers import conv_params
from tests.models.helpers import forward_and_train_step
from tests.models.helpers import kernel_initializers
from tests.models.helpers import output_shapes
from tests.models.helpers import roundtrip
from tests.models.helpers import train_step

SMALL = dict(
    input_shape=(32, 32, 3), num_classes=10, small_input=True,
    width_multiplier=0.125,
)  # fmt: skip


def test_paper_count_and_shapes():
    model = build_alexnet()
    assert model.count_params() == 60_965_224  # Caffe bvlc_alexnet
    shapes = output_shapes(
        model, ["conv1_conv", "conv1_pool", "conv2_pool", "conv5_pool", "fc8"]
    )
    assert shapes == {
        "conv1_conv": (55, 55, 96),
        "conv1_pool": (27, 27, 96),
        "conv2_pool": (13, 13, 256),
        "conv5_pool": (6, 6, 256),
        "fc8": (1000,),
    }

    # PAPERS.md 3c per-layer counts (grouped conv = two towers).
    def count(prefix):
        return sum(
            layer.count_params()
            for layer in model.layers
            if layer.name.startswith(prefix)
        )

    assert count("conv2_conv") == 307_456
    assert count("conv4_conv") == 663_936
    assert count("conv5_conv") == 442_624
    assert count("fc6") == 37_752_832
    # Sec. 5: biases 1 in conv2/4/5 and fc6/7, 0 in conv1/conv3/fc8.
    assert np.all(model.get_layer("conv2_conv_g1").bias.numpy() == 1.0)
    assert np.all(model.get_layer("fc7").bias.numpy() == 1.0)
    assert np.all(model.get_layer("conv3_conv").bias.numpy() == 0.0)
    assert abs(model.get_layer("fc6").kernel.numpy().std() - 0.01) < 1e-3


def test_one_tower_and_native_groups_counts():
    assert build_alexnet(groups=1).count_params() == 62_378_344
    native = build_alexnet(native_groups=True, lrn=False)
    assert native.count_params() == 60_965_224
    assert native.get_layer("conv2_conv").groups == 2


def test_native_and_split_groups_compute_the_same():
    split = build_alexnet(**SMALL)
    native = build_alexnet(native_groups=True, **SMALL)
    for stage in ("conv1", "conv3"):
        native.get_layer(f"{stage}_conv").set_weights(
            split.get_layer(f"{stage}_conv").get_weights()
        )
    for stage in ("conv2", "conv4", "conv5"):
        k0, b0 = split.get_layer(f"{stage}_conv_g0").get_weights()
        k1, b1 = split.get_layer(f"{stage}_conv_g1").get_weights()
        native.get_layer(f"{stage}_conv").set_weights(
            [np.concatenate([k0, k1], -1), np.concatenate([b0, b1])]
        )
    for fc in ("fc6", "fc7", "fc8"):
        native.get_layer(fc).set_weights(split.get_layer(fc).get_weights())
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(native(x), split(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["conv2d", "unshared", "tiled"])
def test_small_train_step_every_kind(kind):
    model = build_alexnet(conv={"kind": kind}, **SMALL)
    forward_and_train_step(model)


@pytest.mark.parametrize("kind", ["unshared", "tiled"])
def test_stage_swap_changes_count_by_formula(kind):
    base = build_alexnet(**SMALL).count_params()
    swapped = build_alexnet(conv={"kind": kind, "stages": ["conv4"]}, **SMALL)
    # 32 px small: conv1 -> 32, pools -> 15 -> 7; conv4 is 3x3 "same" on
    # 7x7, two towers of 48/2 = 24 -> 24 channels (384 * 0.125 = 48).
    delta = 2 * (
        conv_params(kind, (7, 7), 3, 24, 24)
        - conv_params("conv2d", (7, 7), 3, 24, 24)
    )
    assert swapped.count_params() - base == delta


def test_init_options():
    """Sec. 5 biases (1 in conv2/4/5 and fc6/7, 0 elsewhere), the paper's
    N(0, init_stddev^2) weights, and the mini table's He/zero-bias switch."""

    def biases(model):
        return {
            la.name: float(np.mean(la.bias))
            for la in model.layers
            if isinstance(getattr(la, "bias", None), keras.Variable)
        }

    paper = build_alexnet(**SMALL)
    ones = {n for n, b in biases(paper).items() if b == 1.0}
    assert {n.split("_")[0] for n in ones} == {
        "conv2", "conv4", "conv5", "fc6", "fc7"
    }  # fmt: skip
    assert all(b in (0.0, 1.0) for b in biases(paper).values())
    inits = kernel_initializers(paper)
    assert all(i.stddev == 0.01 for i in inits)
    he = build_alexnet(
        kernel_initializer="he_normal", unit_biases=False, **SMALL
    )
    assert set(biases(he).values()) == {0.0}
    inits = kernel_initializers(he)
    assert all(isinstance(i, keras.initializers.HeNormal) for i in inits)


def test_roundtrip(tmp_path):
    model = build_alexnet(conv={"kind": "tiled", "stages": ["conv2"]}, **SMALL)
    roundtrip(model, tmp_path)


def test_bad_arguments():
    with pytest.raises(ValueError, match="Received: groups"):
        build_alexnet(groups=3)
    with pytest.raises(ValueError, match="Received: stages"):
        build_alexnet(conv={"stages": ["block1"]})
    with pytest.raises(ValueError, match="Received: kind"):
        build_alexnet(conv={"kind": "dense"})
    with pytest.raises(ValueError, match="small_input=True"):
        build_alexnet(input_shape=(64, 64, 3))
    assert build_alexnet(input_shape=(67, 67, 3)).output_shape == (None, 1000)


def test_extra_conv6_count_and_shapes():
    """Sec. 6 "1 CNN*": a sixth conv over pool5 (256 x 3x3 "same", our
    width choice): +3*3*256*256 + 256 = 590,080 parameters."""
    model = build_alexnet(extra_conv6=True)
    assert model.count_params() == 61_555_304
    assert model.get_layer("conv6_conv").count_params() == 590_080
    shapes = output_shapes(model, ["conv5_pool", "conv6_relu", "fc6"])
    assert shapes == {
        "conv5_pool": (6, 6, 256),
        "conv6_relu": (6, 6, 256),
        "fc6": (4096,),
    }
    assert model.get_layer("fc6").input.shape[-1] == 9216  # fc6 unchanged
    assert np.all(model.get_layer("conv6_conv").bias.numpy() == 1.0)
    # The other counts are untouched by the option's default.
    assert build_alexnet().count_params() == 60_965_224
    small = build_alexnet(extra_conv6=True, conv={"stages": ["conv6"]}, **SMALL)
    with pytest.raises(ValueError, match="conv6"):
        build_alexnet(conv={"stages": ["conv6"]}, **SMALL)
    x = np.random.default_rng(2).random((2, 32, 32, 3)).astype("float32")
    train_step(small, x, 10)
