"""VGG builder (Simonyan & Zisserman 2015, Tables 1-2; PAPERS.md 4)."""

import keras
import pytest

from convnet_repro import layers
from convnet_repro.models.vgg import build_vgg
from tests.models.helpers import conv_params
from tests.models.helpers import forward_and_train_step
from tests.models.helpers import roundtrip

SMALL = dict(
    input_shape=(32, 32, 3), num_classes=10, small_input=True,
    width_multiplier=0.125,
)  # fmt: skip
# PAPERS.md 4b, exact with biases, 1000 classes.
COUNTS = {
    "A": 132_863_336,
    "A-LRN": 132_863_336,
    "B": 133_047_848,
    "C": 133_638_952,
    "D": 138_357_544,
    "E": 143_667_240,
}


def test_vgg_d_count_and_shapes():
    model = build_vgg("D")
    assert model.count_params() == COUNTS["D"]
    assert model.get_layer("block5_pool").output.shape[1:] == (7, 7, 512)
    convs = [
        layer for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D)
    ]  # fmt: skip
    assert len(convs) == 13  # 16 weight layers - 3 FC


@pytest.mark.slow
def test_d_and_e_equal_keras_applications():
    assert keras.applications.VGG16(weights=None).count_params() == COUNTS["D"]
    assert keras.applications.VGG19(weights=None).count_params() == COUNTS["E"]


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["A", "A-LRN", "B", "C", "E"])
def test_paper_counts(variant):
    assert build_vgg(variant).count_params() == COUNTS[variant]


def test_variant_structure():
    a_lrn = build_vgg("A-LRN", **SMALL)
    lrns = [
        layer.name for layer in a_lrn.layers
        if isinstance(layer, layers.LocalResponseNormalization)
    ]  # fmt: skip
    assert lrns == ["block1_lrn"]
    c = build_vgg("C", **SMALL)
    # Table 1: C's last conv in blocks 3-5 is 1x1.
    for block in (3, 4, 5):
        assert c.get_layer(f"block{block}_conv3").kernel_size == (1, 1)
    assert build_vgg("vgg19", **SMALL).name == "vgg_e"


@pytest.mark.parametrize("kind", ["conv2d", "unshared", "tiled"])
def test_small_train_step_every_kind(kind):
    model = build_vgg("A", conv={"kind": kind}, **SMALL)
    forward_and_train_step(model)


@pytest.mark.parametrize("kind", ["unshared", "tiled"])
def test_stage_swap_changes_count_by_formula(kind):
    base = build_vgg("D", **SMALL).count_params()
    swapped = build_vgg("D", conv={"kind": kind, "stages": ["block4"]}, **SMALL)
    # block4 of D: three 3x3 convs at 32/8 = 4x4, 256*0.125=32 -> 64 -> 64.
    delta = sum(
        conv_params(kind, (4, 4), 3, c, 64)
        - conv_params("conv2d", (4, 4), 3, c, 64)
        for c in (32, 64, 64)
    )
    assert swapped.count_params() - base == delta


def test_roundtrip(tmp_path):
    model = build_vgg("A-LRN", conv={"kind": "unshared", "stages": ["block5"]},
                      **SMALL)  # fmt: skip
    roundtrip(model, tmp_path)


def test_bad_arguments():
    with pytest.raises(ValueError, match="Received: variant"):
        build_vgg("F")
    with pytest.raises(ValueError, match="Received: input_shape"):
        build_vgg("A", input_shape=(16, 16, 3))
