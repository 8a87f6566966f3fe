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
