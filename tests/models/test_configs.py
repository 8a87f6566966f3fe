"""conf/model/*.yaml: every config composes, targets a builder and accepts
only its arguments; the small and MNIST configs instantiate and run."""

import inspect
import pathlib

import hydra
import numpy as np
import pytest
from hydra import compose
from hydra import initialize_config_dir

from convnet_repro import models

CONF = pathlib.Path(__file__).resolve().parents[2] / "conf"
NAMES = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
SMALL = [n for n in NAMES if n.endswith("_small")] + ["tiny_cnn"]


def _compose(name, input_shape, num_classes):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            overrides=[
                f"+model={name}",
                f"+data.input_shape={list(input_shape)}",
                f"+data.num_classes={num_classes}",
            ]
        )
    return cfg.model


def test_every_family_has_a_small_config():
    for family in ("alexnet", "vgg", "googlenet", "resnet", "bn_inception"):
        assert family in NAMES and f"{family}_small" in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_config_targets_builder_with_valid_arguments(name):
    cfg = _compose(name, (32, 32, 3), 10)
    assert cfg._convert_ == "all"
    builder = hydra.utils.get_method(cfg._target_)
    assert builder in {
        f for f in models.MODELS.values() if inspect.isfunction(f)
    }
    params = inspect.signature(builder).parameters
    keys = {k for k in cfg if not k.startswith("_")}
    assert keys <= set(params), keys - set(params)
    assert list(cfg.input_shape) == [32, 32, 3] and cfg.num_classes == 10


@pytest.mark.parametrize("name", SMALL)
def test_small_configs_instantiate_and_run(name):
    model = hydra.utils.instantiate(_compose(name, (32, 32, 3), 10))
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    assert model(x).shape == (2, 10)


def test_mnist_mlp_and_cifar_resnet_configs():
    mlp = hydra.utils.instantiate(_compose("bn_mnist_mlp", (28, 28, 1), 10))
    assert mlp.count_params() == 100_610
    resnet = hydra.utils.instantiate(_compose("resnet_cifar", (32, 32, 3), 10))
    assert resnet.name == "resnet20"
