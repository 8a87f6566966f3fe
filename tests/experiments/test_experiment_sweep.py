"""Every experiment config composes, validates and (the small ones) trains.

In the style of lightning-hydra-template's `tests/test_sweeps.py`: one case
per `conf/experiment/*.yaml`. Each config is composed with Hydra, checked by
the schema and `validate_config` (the root and every variant x seed child),
and its optimizer and learning-rate schedule are built from their
`_target_`s. The full-scale `imagenet_*` configs stop there (every one of
them is trained for a few steps by its dress rehearsal, `make rehearse`);
the CPU-scale `bn_mnist*` (fast suite) and `imagenette_*` (slow suite)
configs also train their first child for two steps on a few real images
through the engine.
"""

import pathlib

import keras
import pytest
import yaml
from omegaconf import OmegaConf
from omegaconf import open_dict

from convnet_repro.experiments.engine import optimization
from convnet_repro.experiments.engine import train as train_lib
from convnet_repro.experiments.engine.compose import CONF_DIR
from convnet_repro.experiments.engine.compose import compose
from convnet_repro.experiments.engine.config_checks import validate_config

_SLOW = pytest.mark.slow
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
# bn_mnist* runs take ~8-12 s each on 2 busy cores; the imagenette_* ones
# 15-32 s (they decode JPEGs and build the paper architectures): slow.
SMALL = [
    name if name.startswith("bn_mnist") else pytest.param(name, marks=_SLOW)
    for name in EXPERIMENTS
    if name.startswith(("bn_mnist", "imagenette_"))
]
TINY_RUN = [
    "trainer.steps=2",
    "trainer.steps_per_execution=1",
    "trainer.eval_every_steps=2",
    "trainer.log_every_steps=1",
    "trainer.checkpoint_every_steps=2",
    "trainer.eval_steps=1",
    "trainer.progress=none",
    "data.batch_size=4",
    "data.eval_batch_size=4",
    "++data.num_train_examples=8",
    "+data.num_val_examples=4",
    "tracking.log_figures=false",
    "report=null",
]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_validates_and_builds_its_optimizer(name):
    cfg = compose([f"experiment={name}"])
    validate_config(cfg)
    children = train_lib.expand_children(cfg)
    for child in children:
        validate_config(child.cfg)
    for run in [c.cfg for c in children] or [cfg]:
        learning_rate, callback = optimization.build_learning_rate(run)
        optimizer = optimization.build_optimizer(run, learning_rate)
        assert isinstance(optimizer, keras.optimizers.Optimizer)
        assert callback is None or isinstance(
            callback, keras.callbacks.Callback
        )
        lr = optimizer.learning_rate
        start = float(keras.ops.convert_to_numpy(lr))
        assert start == pytest.approx(run.optimizer.learning_rate)


@pytest.mark.parametrize("name", SMALL)
def test_small_experiment_trains_two_steps(name, tmp_path):
    cfg = compose([f"experiment={name}", *TINY_RUN], tmp_path=tmp_path)
    children = train_lib.expand_children(cfg)
    run = children[0].cfg if children else cfg
    with open_dict(run):  # a variant may have changed the tiny settings
        for item in TINY_RUN:
            key, value = item.lstrip("+").split("=", 1)
            OmegaConf.update(run, key, yaml.safe_load(value), merge=False)
    validate_config(run)
    result = train_lib.train(run)
    assert result["status"] == "FINISHED", result
    assert 0.0 <= result["val/top1_error"] <= 1.0
    ckpt = pathlib.Path(run.paths.checkpoint_dir) / run.experiment_name
    assert any(ckpt.rglob("*.keras"))
