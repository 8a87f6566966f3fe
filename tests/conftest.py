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
    import sys

    if "tensorflow" not in sys.modules:  # other Keras backends (make
        return  # test-backends) may run without TensorFlow installed
    from tensorflow.python.framework import config

    if config.is_op_determinism_enabled():
        config.disable_op_determinism()


@pytest.fixture
def restore_tracking_uri():
    """Sets MLflow's tracking URI back after the test: the engine and the
    evaluation CLI point it at each test's own store.

    Use it with `pytestmark = pytest.mark.usefixtures("restore_tracking_uri")`.
    """
    import mlflow

    previous = mlflow.get_tracking_uri()
    yield
    mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="session")
def ilsvrc_sample(tmp_path_factory):
    """An ILSVRC-2012-format sample of the Imagenette JPEGs, made once per
    session (`experiments.data.ilsvrc_sample`; 20 train + 20 val images of
    each of 10 wnids, ~7 s): `{"folder", "manual_dir", "wnids", "train",
    "val"}`."""
    from convnet_repro.experiments.data import data_root
    from convnet_repro.experiments.data import ilsvrc_sample as sample

    if data_root.resolve_local_dir("imagenette") is None:
        pytest.skip("Imagenette not found in the offline data root")
    return sample.make_ilsvrc_sample(tmp_path_factory.mktemp("ilsvrc"))


@pytest.fixture(scope="session")
def ilsvrc_tfds_dir(ilsvrc_sample, tmp_path_factory):
    """tfds `data_dir` with `imagenet2012` really prepared from the sample's
    `manual_dir` tars (once per session, ~8 s), in 4 shards per split."""
    from convnet_repro.experiments.data import ilsvrc_sample as sample

    data_dir = tmp_path_factory.mktemp("ilsvrc_tfds")
    sample.prepare_tfds(ilsvrc_sample["manual_dir"], data_dir, num_shards=4)
    return str(data_dir)
