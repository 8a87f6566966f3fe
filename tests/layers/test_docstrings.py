"""The `Example:` sections of the layer docstrings run and are right."""

import doctest
import importlib

import keras
import numpy as np
import pytest

MODULES = [
    "layers",
    "layers.unshared_conv",
    "layers.tiled_conv2d",
    "layers.functional",
    "layers.filter_bank",
    "layers.pooling",
    "layers.local_response_normalization",
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
