"""The `Example:` sections of the layer docstrings run and are right."""

import doctest
import importlib

import keras
import numpy as np
import pytest

MODULES = [
    "convnet_repro.layers",
    "convnet_repro.layers.unshared_conv",
    "convnet_repro.layers.tiled_conv2d",
    "convnet_repro.layers.functional",
    "convnet_repro.layers.filter_bank",
    "convnet_repro.layers.pooling",
    "convnet_repro.layers.local_response_normalization",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    globs = {**vars(module), "np": np, "keras": keras}
    result = doctest.testmod(
        module, extraglobs=globs, optionflags=doctest.NORMALIZE_WHITESPACE
    )
    assert result.attempted > 0
    assert result.failed == 0
