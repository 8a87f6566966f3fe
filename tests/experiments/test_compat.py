"""The Keras patches of `experiments.engine.compat` are version-guarded."""

import keras
import pytest

from convnet_repro.experiments.engine import compat


def test_patches_refuse_another_keras_version():
    compat.check_keras_version()  # the installed (pinned) version passes
    assert keras.version().startswith(compat.KERAS_VERSION + ".")
    with pytest.raises(RuntimeError) as info:
        compat.check_keras_version("3.16.0")
    message = str(info.value)
    assert "\n" not in message
    assert "experiments/engine/compat.py" in message
    assert "Keras 3.16.0 is installed" in message
