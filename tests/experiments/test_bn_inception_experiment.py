"""The `bn_inception*` experiments (BN paper Sec. 4.2.2, Fig. 2-3).

Fast: both configs compose and validate, every variant carries exactly the
Sec. 4.2.1 recipe relative to the Inception baseline (LR x1/x5/x30, L2 / 5,
decay 6x faster, no LRN, no dropout, BN, sigmoid), and the mini model of
every variant builds with the layers its recipe implies. Slow: a few-step
run of the mini experiment writes one parent with six children and the
report.
"""

import math
import os
import pathlib

import pytest

from convnet_repro.experiments.engine.compose import compose
from tests.experiments.training import train_with_report

EXPERIMENTS = ("bn_inception", "bn_inception_full")
VARIANTS = (
    "inception",
    "bn_baseline",
    "bn_x5",
    "bn_x30",
    "bn_x5_sigmoid",
    "inception_sigmoid",
)
# Paper Sec. 4.2.1/4.2.2 relative to Inception: (BN, LR multiple,
# accelerated recipe, activation).
RECIPE = {
    "inception": (False, 1, False, "relu"),
    "bn_baseline": (True, 1, False, "relu"),
    "bn_x5": (True, 5, True, "relu"),
    "bn_x30": (True, 30, True, "relu"),
    "bn_x5_sigmoid": (True, 5, True, "sigmoid"),
    "inception_sigmoid": (False, 1, False, "sigmoid"),
}
# Training-set sizes, for "4% every 8 epochs" (GoogLeNet Sec. 6).
TRAIN_SIZE = {"imagenette": 9469, "imagenet2012": 1281167}
IMAGENETTE = (
    pathlib.Path(os.environ.get("CONVNET_REPRO_DATA_DIR", ""))
    / "imagenette2-224"
)


def _children(name, tmp_path, overrides=()):
    from convnet_repro.experiments.engine.config_checks import validate_config
    from convnet_repro.experiments.engine.train import expand_children

    cfg = compose([f"experiment={name}", *overrides], tmp_path=tmp_path)
    validate_config(cfg)
    children = {c.name: c.cfg for c in expand_children(cfg)}
    for child in children.values():
        validate_config(child)
    return cfg, children


def test_the_long_tier_is_the_mini_recipe_for_three_seeds(tmp_path):
    """`bn_inception_long` drops the sigmoid pair in its own YAML (null
    variants) and changes nothing else but the seeds and evaluation."""
    mini, mini_children = _children("bn_inception", tmp_path / "mini")
    long, children = _children("bn_inception_long", tmp_path / "long")
    four = VARIANTS[:4]
    # seed-major, so that a run stopped part-way holds whole comparisons
    assert list(children) == [f"{v}-seed{s}" for s in (0, 1, 2) for v in four]
    for name, child in children.items():
        same = mini_children[name.rsplit("-", 1)[0]]
        for key in ("model", "optimizer", "schedule"):
            assert child[key] == same[key], (name, key)
        assert {**child.data, "seed": None} == {**same.data, "seed": None}
        assert child.seed == child.data.seed == int(name[-1])
    assert long.trainer.steps == mini.trainer.steps
    assert long.trainer.eval_every_steps == 100


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_variants_follow_the_paper_recipe(name, tmp_path):
    cfg, children = _children(name, tmp_path)
    assert list(children) == list(VARIANTS)
    assert cfg.data.batch_size == 32  # paper Sec. 4.2
    assert cfg.optimizer._target_ == "keras.optimizers.SGD"
    assert cfg.optimizer.momentum == 0.9
    assert cfg.optimizer.weight_decay_style == "l2"
    assert (
        cfg.schedule._target_ == "keras.optimizers.schedules.ExponentialDecay"
    )
    assert cfg.schedule.staircase is True
    epochs_8 = 8 * TRAIN_SIZE[cfg.data.name] / cfg.data.batch_size
    assert cfg.schedule.decay_steps == round(epochs_8)
    assert cfg.schedule.decay_rate == 0.96
    base = children["inception"]
    assert base.optimizer.learning_rate == 0.0015  # paper 4.2.2
    assert base.model.lrn is True and base.model.dropout == 0.4
    for variant, child in children.items():
        bn, lr_mult, fast, activation = RECIPE[variant]
        assert child.model.batch_norm is bn, variant
        assert child.model.activation == activation, variant
        assert child.optimizer.learning_rate == pytest.approx(0.0015 * lr_mult)
        assert child.model.lrn is (not fast), variant
        assert child.model.dropout == (0.0 if fast else 0.4), variant
        wd_ratio = base.optimizer.weight_decay / child.optimizer.weight_decay
        assert wd_ratio == pytest.approx(5.0 if fast else 1.0), variant
        decay_ratio = base.schedule.decay_steps / child.schedule.decay_steps
        assert decay_ratio == pytest.approx(6.0 if fast else 1.0, rel=2e-3)
        assert child.trainer.steps == cfg.trainer.steps
    t = cfg.trainer
    assert t.eval_every_steps % t.steps_per_execution == 0
    assert t.steps % t.eval_every_steps == 0
    assert cfg.report.metric == "val/top1_accuracy"
    assert cfg.report.baseline == "inception"
    assert set(cfg.paper.variants) == set(VARIANTS)


def test_mini_scale_settings(tmp_path):
    cfg, _ = _children("bn_inception", tmp_path)
    assert cfg.data.name == "imagenette"
    assert list(cfg.data.input_shape) == [32, 32, 3]
    assert cfg.model.small_input is True
    assert cfg.model.width_multiplier == 0.25
    assert cfg.report.results_dir.endswith("results/bn_inception")


def test_full_scale_settings(tmp_path):
    cfg, _ = _children("bn_inception_full", tmp_path)
    assert cfg.data.name == "imagenet2012"
    assert list(cfg.data.input_shape) == [224, 224, 3]
    assert cfg.data.crop_size == 224 and cfg.data.resize_size == 256
    assert cfg.model.small_input is False
    assert cfg.model.width_multiplier == 1.0
    assert (
        cfg.model._target_
        == "convnet_repro.models.bn_inception.build_bn_inception"
    )
    assert cfg.trainer.steps == 31_000_000  # Inception's 72.2% (Fig. 3)
    assert cfg.report.results_dir.endswith("results/bn_inception/full")


def test_full_scale_per_variant_steps_override(tmp_path):
    # The override documented in bn_inception_full.yaml.
    _, children = _children(
        "bn_inception_full",
        tmp_path,
        ["+variants.bn_x30.trainer.steps=8000000"],
    )
    assert children["bn_x30"].trainer.steps == 8_000_000
    assert children["bn_x30"].optimizer.learning_rate == pytest.approx(0.045)
    assert children["bn_x5"].trainer.steps == 31_000_000


@pytest.mark.parametrize("variant", VARIANTS)
def test_mini_model_of_each_variant(variant, tmp_path):
    import hydra
    import numpy as np

    _, children = _children("bn_inception", tmp_path)
    child = children[variant]
    model = hydra.utils.instantiate(child.model, _convert_="all")
    kinds = [type(layer).__name__ for layer in model.layers]
    bn, _, fast, activation = RECIPE[variant]
    assert ("BatchNormalization" in kinds) is bn
    assert ("LocalResponseNormalization" in kinds) is (not fast)
    assert ("Dropout" in kinds) is (not fast)
    acts = {
        layer.get_config()["activation"]
        for layer in model.layers
        if type(layer).__name__ == "Activation"
    }
    assert acts == {activation}
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype="float32")
    logits = model(x, training=False)
    assert tuple(logits.shape) == (2, 10)
    assert np.all(np.isfinite(np.asarray(logits)))
    # Same module structure at a quarter of the widths: under a million
    # parameters (the full model has 11.3M).
    assert 100_000 < model.count_params() < 1_000_000


@pytest.mark.slow
@pytest.mark.skipif(
    not IMAGENETTE.is_dir(), reason="needs imagenette2-224 offline"
)
def test_mini_smoke_run_writes_parent_children_and_report(tmp_path):
    from mlflow.tracking import MlflowClient

    overrides = ["experiment=bn_inception", "trainer.steps=20"]
    overrides += ["trainer.eval_every_steps=10", "trainer.log_every_steps=10"]
    overrides += ["trainer.checkpoint_every_steps=20"]
    overrides += ["data.num_val_examples=200"]
    out, results = train_with_report(tmp_path, overrides)
    assert sorted(out["children"]) == sorted(VARIANTS)
    client = MlflowClient()
    for result in out["children"].values():
        history = client.get_metric_history(
            result["run_id"], "val/top1_accuracy"
        )
        assert sorted(m.step for m in history) == [10, 20]
        assert all(0.0 <= m.value <= 1.0 for m in history)
    names = {"table.md", "table.csv", "summary.json", "accuracy_vs_steps.png"}
    assert {p.name for p in results.iterdir()} == names
    table = (results / "table.md").read_text()
    for label in ("Inception", "BN-x30", "BN-x5-Sigmoid", "Inception-Sigmoid"):
        assert f"| {label} |" in table
    artifacts = client.list_artifacts(out["run_id"], "report")
    assert len(artifacts) == len(names)
    assert math.isfinite(out["val/top1_accuracy"])
