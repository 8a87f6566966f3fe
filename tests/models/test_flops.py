"""models.flops: multiply-adds from layer shapes vs formulas and papers."""

import keras
import pytest

from convnet_repro import layers
from convnet_repro import models
from convnet_repro.models.flops import count_macs
from convnet_repro.models.flops import training_flops


def test_every_counted_layer_kind_by_formula():
    x = inputs = keras.Input((16, 16, 4))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(x)  # 8x8x8
    x = keras.layers.Conv2D(8, 3, padding="same", groups=2)(x)  # 8x8x8
    x = keras.layers.SeparableConv2D(6, 3, depth_multiplier=2)(x)  # 6x6x6
    x = layers.UnsharedConv2D(5, 3)(x)  # 4x4x5
    x = layers.TiledConv2D(4, 1, tile_size=2)(x)  # 4x4x4
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.MaxPooling2D(2)(x)  # 2x2x4
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(3)(x)
    expected = (
        8 * 8 * 8 * (9 * 4)
        + 8 * 8 * 8 * (9 * 4)  # groups=2: 4 of the 8 input channels
        + 6 * 6 * (8 * 2 * 9 + 8 * 2 * 6)
        + 4 * 4 * 5 * (9 * 6)
        + 4 * 4 * 4 * 5
        + 16 * 3
    )
    model = keras.Model(inputs, outputs)
    assert count_macs(model) == expected
    assert training_flops(model) == 6 * expected


@pytest.mark.parametrize(
    "name, kwargs, published_gmacs, tolerance",
    [
        # Krizhevsky 2012 two towers at 227 px: ~0.72 GMACs (common figure).
        ("alexnet", {"input_shape": (227, 227, 3)}, 0.72, 0.01),
        # He et al. 2016, Table 1: 1.8 / 3.6 / 3.8 x 10^9 FLOPs (mult-adds).
        ("resnet18", {}, 1.8, 0.05),
        ("resnet50", {}, 3.8, 0.06),
        # Szegedy et al. 2015, Sec. 1: "1.5 billion multiply-adds".
        ("googlenet", {}, 1.5, 0.1),
    ],
)
def test_published_figures(name, kwargs, published_gmacs, tolerance):
    gmacs = count_macs(models.build(name, **kwargs)) / 1e9
    assert gmacs == pytest.approx(published_gmacs, abs=tolerance)


@pytest.mark.slow
def test_vgg16_published_figure():
    # 15.5 GMACs at 224 px (e.g. the keras / torchvision model cards).
    assert count_macs(models.build("vgg16")) / 1e9 == pytest.approx(
        15.5, abs=0.05
    )


def test_unknown_size_is_refused():
    model = models.build(
        "resnet18", input_shape=(None, None, 3), num_classes=10
    )
    with pytest.raises(ValueError, match="static input_shape"):
        count_macs(model)


def test_gpu_budget_row_from_the_composed_config():
    from benchmarks import gpu_budget

    assert "bn_inception_full" in gpu_budget.full_scale_configs()
    assert "imagenet_googlenet_7models" in gpu_budget.full_scale_configs()
    row = gpu_budget.budget(
        "imagenet_alexnet_5cnns", 1000.0, 0.5, measure=False, cache={}
    )
    # Five seeds of imagenet_alexnet: 900,000 steps of 128 images each.
    assert row["runs"] == 5 and row["px"] == 227
    assert row["images"] == 5 * 900_000 * 128
    (gmacs,) = row["gmacs"]
    assert gmacs == pytest.approx(0.724, abs=0.001)
    flops = 6 * gmacs * 1e9 * row["images"]
    assert row["gpu_hours"] == pytest.approx(flops / 500e12 / 3600)
    table = gpu_budget.markdown([row], 1000.0, 0.5)
    assert "| imagenet_alexnet_5cnns | alexnet | 227 | 5 |" in table
