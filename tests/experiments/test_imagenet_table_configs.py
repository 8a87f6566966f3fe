"""Every ImageNet-table experiment config composes (full scale) and builds
its models (mini scale); the shortened-run overrides are consistent."""

import pathlib

import hydra
import pytest
from omegaconf import OmegaConf

from convnet_repro.experiments import evaluate as ev
from convnet_repro.experiments.engine import config_checks
from convnet_repro.experiments.engine.compose import compose
from convnet_repro.experiments.reports import imagenet_runner

CONF = pathlib.Path(__file__).resolve().parents[2] / "conf" / "experiment"
FULL = sorted(p.stem for p in CONF.glob("imagenet_*.yaml"))
MINI = sorted(p.stem for p in CONF.glob("imagenette_*.yaml"))


def _compose(name, *overrides):
    return compose([f"experiment={name}", *overrides])


def _check_rows(cfg):
    assert (
        cfg.report._target_
        == "convnet_repro.experiments.evaluate.evaluate_experiment"
    )
    rows = OmegaConf.to_container(cfg.report.rows, resolve=True)
    assert rows
    for row in rows:
        assert row["protocol"] in ev.PROTOCOLS
        assert row["row"]
    # At least one row carries the paper's reference number.
    assert any(
        r.get("paper_top1_error") or r.get("paper_top5_error") for r in rows
    )
    return rows


def test_the_papers_rows_are_all_there():
    assert len(FULL) >= 20
    for name in (
        "imagenet_alexnet",
        "imagenet_alexnet_5cnns",
        "imagenet_vgg_e_jitter",
        "imagenet_googlenet_7models",
        "imagenet_resnet152",
    ):
        assert name in FULL


@pytest.mark.parametrize("name", FULL)
def test_full_scale_config_composes(name):
    cfg = _compose(name)
    config_checks.validate_config(cfg)
    rows = _check_rows(cfg)
    assert cfg.report.scale == "full"
    assert cfg.data.name == "imagenet2012"
    assert cfg.data.num_classes == 1000
    assert cfg.optimizer.momentum == 0.9
    assert cfg.experiment_name == name
    for row in rows:
        for key in ("paper_top1_error", "paper_top5_error"):
            if row.get(key) is not None:
                assert 0 < row[key] < 50


def test_full_scale_recipes_match_the_papers():
    alex = _compose("imagenet_alexnet")
    assert alex.optimizer.weight_decay == 0.0005
    assert alex.data.batch_size == 128
    assert list(alex.data.input_shape) == [227, 227, 3]
    five = _compose("imagenet_alexnet_5cnns")
    assert list(five.seeds) == [0, 1, 2, 3, 4]
    vgg = _compose("imagenet_vgg_d_jitter")
    assert vgg.model.variant == "D" and list(vgg.data.scale_range) == [256, 512]
    assert vgg.data.resize_size == 384 and vgg.trainer.steps == 370000
    goog = _compose("imagenet_googlenet_7models")
    assert len(goog.variants) == 7
    assert [r.protocol for r in goog.report.rows] == list(ev.PROTOCOLS)
    res = _compose("imagenet_resnet152")
    assert (
        res.model.variant == "resnet152" and res.optimizer.learning_rate == 0.1
    )
    assert res.optimizer.weight_decay == 0.0001


@pytest.mark.parametrize("name", MINI)
def test_mini_config_builds_its_models(name):
    from convnet_repro.experiments.engine import train as engine

    cfg = _compose(name)
    config_checks.validate_config(cfg)
    _check_rows(cfg)
    assert cfg.report.scale == (
        "mini-long" if name.endswith("_long") else "mini"
    )
    assert cfg.data.name == "imagenette"
    configs = [c.cfg for c in engine.expand_children(cfg)] or [cfg]
    for child in configs[:3]:  # the five seeds share one architecture
        model = hydra.utils.instantiate(child.model)
        assert tuple(model.input_shape[1:]) == (56, 56, 3)
        outputs = model.outputs
        assert all(tuple(o.shape[1:]) == (10,) for o in outputs)
        # One loss weight per output (GoogLeNet's aux heads, Sec. 5).
        if len(outputs) > 1:
            assert len(child.trainer.loss_weights) == len(outputs)


def test_mini_table_lists_existing_configs():
    assert set(imagenet_runner.MINI_EXPERIMENTS) <= set(MINI)


def test_shortened_overrides():
    cfg = _compose("imagenette_vgg_a")
    out = imagenet_runner.shortened_overrides(cfg, 0.25, max_images=300)
    steps = cfg.trainer.steps // 4
    assert f"trainer.steps={steps}" in out
    assert steps % cfg.trainer.steps_per_execution == 0
    bounds = [round(b / 4) for b in cfg.schedule.boundaries]
    assert f"schedule.boundaries=[{','.join(map(str, bounds))}]" in out
    assert "report.max_images=300" in out
    short = _compose("imagenette_vgg_a", *out)
    config_checks.validate_config(short)
    assert short.extras.fraction == 0.25  # the report hook tags the rows
    assert imagenet_runner.shortened_overrides(cfg, 1.0) == [
        "++extras.fraction=1.0"
    ]
    with pytest.raises(ValueError, match="Received: fraction=0"):
        imagenet_runner.shortened_overrides(cfg, 0)
