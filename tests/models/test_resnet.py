"""ResNet builder (He et al. 2016, Table 1, Sec. 3.3, 4.2; PAPERS.md 6)."""

import keras
import numpy as np
import pytest

from convnet_repro.models._common import ZeroPadChannels
from convnet_repro.models.resnet import build_resnet
from tests.models.helpers import assert_conv_pads_symmetrically
from tests.models.helpers import conv_params
from tests.models.helpers import forward_and_train_step
from tests.models.helpers import output_shapes
from tests.models.helpers import roundtrip
from tests.models.helpers import train_step
from tests.models.helpers import trainable_count

# PAPERS.md 6a: option B, BN gamma/beta counted, no conv bias.
COUNTS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}
SMALL = dict(
    input_shape=(32, 32, 3), num_classes=10, small_input=True,
    width_multiplier=0.125,
)  # fmt: skip


@pytest.mark.parametrize("variant", ["resnet18", "resnet34", "resnet50"])
def test_paper_counts(variant):
    model = build_resnet(variant)
    assert trainable_count(model) == COUNTS[variant]
    names = ["pool1", "conv2_block1_out", "conv3_block1_out",
             "conv4_block1_out", "conv5_block1_out"]  # fmt: skip
    c = 4 if variant == "resnet50" else 1
    assert output_shapes(model, names) == {
        "pool1": (56, 56, 64),
        "conv2_block1_out": (56, 56, 64 * c),
        "conv3_block1_out": (28, 28, 128 * c),
        "conv4_block1_out": (14, 14, 256 * c),
        "conv5_block1_out": (7, 7, 512 * c),
    }


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["resnet101", "resnet152"])
def test_paper_counts_deep(variant):
    assert trainable_count(build_resnet(variant)) == COUNTS[variant]


def test_strided_windows_pad_like_torchvision():
    # conv1 7x7/2 pads 3, basic blocks' 3x3/2 pad 1 (TF "same": 2|3, 0|1).
    model = build_resnet("resnet18")
    x = np.random.default_rng(0).random((1, 224, 224, 3)).astype("float32")
    assert_conv_pads_symmetrically(model, "conv1", 3, x)
    assert_conv_pads_symmetrically(model, "conv3_block1_1", 1, x)
    # pool1: 3x3/2 max pool over the ReLU output padded with one ring.
    probe = keras.Model(
        model.input,
        [model.get_layer("conv1_relu").output, model.get_layer("pool1").output],
    )
    relu, pooled = (np.asarray(t) for t in probe(x))
    padded = np.pad(relu, [(0, 0), (1, 1), (1, 1), (0, 0)], constant_values=-1)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), (1, 2))
    np.testing.assert_array_equal(pooled, windows[:, ::2, ::2].max((-2, -1)))


def test_shortcut_options_count_by_formula():
    counts = {s: trainable_count(build_resnet("resnet18", shortcut=s))
              for s in "ABC"}  # fmt: skip
    # B adds a 1x1 projection + BN (gamma, beta) where dimensions grow.
    grow = [(64, 128), (128, 256), (256, 512)]
    assert counts["B"] - counts["A"] == sum(i * o + 2 * o for i, o in grow)
    # C also projects every identity shortcut: both blocks of conv2 (64 ->
    # 64 at stride 1), then the second block of conv3, conv4, conv5.
    same = [64, 64, 128, 256, 512]
    assert counts["C"] - counts["B"] == sum(c * c + 2 * c for c in same)


def test_cifar_resnets():
    model = build_resnet("resnet20", input_shape=(32, 32, 3), num_classes=10)
    assert trainable_count(model) == 269_722  # paper: 0.27M
    assert output_shapes(
        model, ["conv2_block3_out", "conv3_block3_out", "conv4_block3_out"]
    ) == {
        "conv2_block3_out": (32, 32, 16),
        "conv3_block3_out": (16, 16, 32),
        "conv4_block3_out": (8, 8, 64),
    }
    # Option A: parameter-free shortcuts (zero padding).
    pads = [la for la in model.layers if isinstance(la, ZeroPadChannels)]
    assert [p.pad for p in pads] == [16, 32]
    # 6n+2 weighted layers.
    n_conv = sum(1 for la in model.layers if la.name.endswith("_conv"))
    assert n_conv + 1 == 20


def test_zero_pad_shortcut_matches_numpy():
    x = np.random.default_rng(0).random((2, 4, 4, 3)).astype("float32")
    got = np.asarray(ZeroPadChannels(5)(x))
    expected = np.concatenate([x, np.zeros((2, 4, 4, 5), "float32")], -1)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("kind", ["conv2d", "unshared", "tiled"])
def test_small_train_step_every_kind(kind):
    model = build_resnet("resnet18", conv={"kind": kind}, **SMALL)
    forward_and_train_step(model)


def test_small_bottleneck_and_cifar_train_step():
    model = build_resnet("resnet50", conv={"kind": "tiled"}, **SMALL)
    x = np.random.default_rng(1).random((2, 32, 32, 3)).astype("float32")
    train_step(model, x, 10)
    cifar = build_resnet(
        "resnet20", input_shape=(16, 16, 3), num_classes=10,
        conv={"kind": "unshared", "stages": ["conv4"]},
    )  # fmt: skip
    train_step(cifar, x[:, :16, :16], 10)


@pytest.mark.parametrize("kind", ["unshared", "tiled"])
def test_stage_swap_changes_count_by_formula(kind):
    kw = dict(input_shape=(32, 32, 3), num_classes=10)
    base = build_resnet("resnet20", **kw).count_params()
    swapped = build_resnet(
        "resnet20", conv={"kind": kind, "stages": ["conv1"]}, **kw
    )
    # conv1: 3x3, 3 -> 16 at 32x32, no bias (BN follows).
    delta = conv_params(kind, (32, 32), 3, 3, 16, bias=False) - conv_params(
        "conv2d", (32, 32), 3, 3, 16, bias=False
    )
    assert swapped.count_params() - base == delta


def test_roundtrip(tmp_path):
    model = build_resnet(
        "resnet20", input_shape=(16, 16, 3), num_classes=10,
        conv={"kind": "tiled", "stages": ["conv3"]},
    )  # fmt: skip
    roundtrip(model, tmp_path)


def test_bad_arguments():
    with pytest.raises(ValueError, match="Received: variant"):
        build_resnet("resnet42")
    with pytest.raises(ValueError, match="Received: shortcut"):
        build_resnet("resnet18", shortcut="D")
    with pytest.raises(ValueError, match="Received: stages"):
        build_resnet("resnet20", conv={"stages": ["conv5"]})
