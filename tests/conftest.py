"""Shared pytest set-up: TensorFlow backend, quiet logs, offline data root."""

import os
import pathlib

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
_SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
if "CONVNET_REPRO_DATA_DIR" not in os.environ and _SHARED_DATA.is_dir():
    os.environ["CONVNET_REPRO_DATA_DIR"] = str(_SHARED_DATA)


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same Python, NumPy and TF seeds."""
    import keras

    keras.utils.set_random_seed(1234)
    yield
    keras.backend.clear_session()
    _reset_op_determinism()


def _reset_op_determinism():
    """Undo `enable_op_determinism` left behind by an in-process `train()`.

    The switch is process-global and Keras silently turns `jit_compile` off
    while it is on, so without this a later XLA test would run unjitted.
    """
    from tensorflow.python.framework import config

    if config.is_op_determinism_enabled():
        config.disable_op_determinism()
