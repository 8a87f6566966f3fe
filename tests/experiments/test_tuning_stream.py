"""The tuning split is built once, by the data step that builds train and
val, and the engine serves it to the callbacks that score it."""

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from omegaconf import open_dict

from convnet_repro.experiments.data import make_datasets
from convnet_repro.experiments.engine import build
from convnet_repro.experiments.engine import train as train_lib
from convnet_repro.experiments.engine.compose import compose
from convnet_repro.experiments.engine.compose import fresh_sqlite_store
from tests.experiments.runs import store_overrides

ES = "convnet_repro.experiments.engine.early_stopping.TuningEarlyStopping"
DATA = dict(
    name="synthetic",
    batch_size=16,
    input_shape=(8, 8, 1),
    num_classes=4,
    num_train_examples=256,
    num_val_examples=64,
    tuning_per_class=8,
)


def _arrays(ds):
    images, labels = zip(*((x.numpy(), y.numpy()) for x, y in ds))
    return np.concatenate(images), np.concatenate(labels)


def test_third_stream_is_the_tuning_split_served_as_val():
    train, val, tuning = make_datasets(**DATA, with_tuning=True)
    want_train, want_tuning = make_datasets(**DATA, eval_split="tuning")
    _, want_val = make_datasets(**DATA)
    for got, want in ((val, want_val), (tuning, want_tuning)):
        (gx, gy), (wx, wy) = _arrays(got), _arrays(want)
        np.testing.assert_array_equal(gy, wy)
        np.testing.assert_array_equal(gx, wx)
    assert len(_arrays(tuning)[1]) == 8 * 4
    # The held-out examples are out of the train stream either way.
    a, b = next(iter(train)), next(iter(want_train))
    np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())


def test_a_tuning_stream_needs_a_tuning_split():
    data = {**DATA, "tuning_per_class": None}
    with pytest.raises(ValueError, match="set data.tuning_per_class"):
        make_datasets(**data, with_tuning=True)


def test_only_callbacks_that_take_it_and_give_no_data_are_served():
    node = OmegaConf.create({"_target_": ES, "every_steps": 10})
    assert build.wants_tuning_split(node)
    own = OmegaConf.create({"_target_": ES, "every_steps": 10, "data": [1]})
    assert not build.wants_tuning_split(own)
    kill = "convnet_repro.experiments.engine.callbacks.FaultInjection"
    assert not build.wants_tuning_split(OmegaConf.create({"_target_": kill}))


def test_engine_run_scores_the_tuning_split_it_built(tmp_path):
    fresh_sqlite_store(tmp_path / "mlruns.db")
    cfg = compose(
        [
            "experiment=smoke",
            "trainer.steps=20",
            "trainer.eval_every_steps=30",
            "trainer.checkpoint_every_steps=10",
            "trainer.progress=none",
            "tracking.log_model=false",
            "tracking.log_figures=false",
            f"+callbacks.es._target_={ES}",
            "+callbacks.es.every_steps=10",
            "+callbacks.es.checkpoint_every_steps=10",
            "+callbacks.es.monitor=tune/loss",
            *store_overrides(tmp_path),
        ]
    )
    with open_dict(cfg):
        cfg.data = {"_target_": "convnet_repro.experiments.data.make_datasets"}
        cfg.data.update({**DATA, "input_shape": [8, 8, 1], "seed": 0})
    out = train_lib.train(cfg)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns.db")
    tune = client.get_metric_history(out["run_id"], "tune/loss")
    assert sorted(m.step for m in tune) == [10, 20]
    # Without tuning_per_class the run fails before it exists.
    with open_dict(cfg):
        cfg.data.tuning_per_class = None
    with pytest.raises(Exception, match="tuning_per_class"):
        train_lib.train(cfg)
