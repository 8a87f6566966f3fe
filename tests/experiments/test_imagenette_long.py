"""The long tier (`imagenette_*_long`): each config is its default-tier
experiment plus the stated long-tier keys, and nothing else differs."""

import hydra
import pytest
from omegaconf import OmegaConf

from convnet_repro.experiments.engine import build
from convnet_repro.experiments.engine import train as train_lib
from convnet_repro.experiments.engine.compose import CONF_DIR
from convnet_repro.experiments.engine.compose import compose
from convnet_repro.experiments.engine.config_checks import validate_config
from convnet_repro.experiments.engine.early_stopping import TuningEarlyStopping

LONG = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*_long.yaml"))
LONG = [n for n in LONG if n.startswith("imagenette_")]
# Keys a long config may change (its header says why); dotted prefixes.
STATED = {
    "experiment_name",
    "tags",
    "seeds",
    "schedule",  # constant: the callback divides the lr on plateaus
    "trainer.steps",  # the cap
    "trainer.eval_every_steps",  # above the cap: val once, at the end
    "trainer.checkpoint_every_steps",  # = the tuning interval
    "trainer.keep_checkpoints",
    "callbacks",
    "data.tuning_per_class",
    "report.scale",
    "report.rows",  # single-model rows score seed 0 (members: 1)
}
EXTRA = {
    "imagenette_vgg_a_long": {"variants", "model.conv.kind"},
    "imagenette_googlenet_long": {"report.max_images"},
}


def _flat(node, prefix=""):
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def _differences(a, b):
    fa, fb = _flat(a), _flat(b)
    return {k for k in set(fa) | set(fb) if fa.get(k, "<absent>") != fb.get(k)}


def _stated(key, stated):
    return any(key == s or key.startswith(f"{s}.") for s in stated)


def test_every_mini_experiment_has_a_long_tier():
    minis = ["alexnet_5cnns", "googlenet", "resnet18", "vgg_a"]
    assert LONG == [f"imagenette_{mini}_long" for mini in minis]


@pytest.mark.parametrize("name", LONG)
def test_long_config_differs_from_its_default_only_where_stated(name):
    long_cfg = compose([f"experiment={name}"])
    base_cfg = compose([f"experiment={name[: -len('_long')]}"])
    validate_config(long_cfg)
    a = OmegaConf.to_container(long_cfg, resolve=True)
    b = OmegaConf.to_container(base_cfg, resolve=True)
    if name == "imagenette_vgg_a_long":  # the default's conv2d variant
        b["model"]["conv"]["kind"] = "conv2d"
    unstated = {
        k
        for k in _differences(a, b)
        if not _stated(k, STATED | EXTRA.get(name, set()))
    }
    assert not unstated, unstated
    # What the long tier says it does.
    t, es = long_cfg.trainer, long_cfg.callbacks.early_stopping
    assert long_cfg.schedule == {} and t.steps == 9000
    assert t.eval_every_steps > t.steps and t.steps % t.eval_every_steps
    assert es.every_steps == t.checkpoint_every_steps == 150
    assert t.steps % es.every_steps == 0
    assert (es.monitor, es.patience, es.lr_drops) == (
        "tune/top1_accuracy",
        5,
        2,
    )
    assert es.restore_best_weights and "data" not in es  # engine serves it
    assert long_cfg.data.tuning_per_class == 50
    assert long_cfg.report.scale == "mini-long"
    seeds = [c.seed for c in train_lib.expand_children(long_cfg)]
    assert seeds[:3] == [0, 1, 2]
    for row in long_cfg.report.rows:  # no row silently ensembles seeds
        assert row.members == 1 or "5 CNNs" in row.row


def test_default_tier_has_no_tuning_split_or_early_stopping():
    for name in ("imagenette_alexnet_5cnns", "imagenette_vgg_a"):
        cfg = compose([f"experiment={name}"])
        assert "tuning_per_class" not in cfg.data
        assert not cfg.callbacks and cfg.report.scale == "mini"


def test_the_callback_builds_from_a_long_config_and_is_served_the_tuning():
    cfg = compose(["experiment=imagenette_resnet18_long"])
    callback = hydra.utils.instantiate(
        cfg.callbacks.early_stopping, _convert_="all"
    )
    assert isinstance(callback, TuningEarlyStopping)
    assert callback.data is None  # no second data pipeline in the callback
    assert build.wants_tuning_split(cfg.callbacks.early_stopping)
    assert callback.patience == 5 and callback.every_steps == 150
