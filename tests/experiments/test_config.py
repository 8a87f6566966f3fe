"""Config composition and validation: bad configs fail before any work."""

import pathlib
import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from convnet_repro.experiments.engine.compose import CONF_DIR
from convnet_repro.experiments.engine.compose import compose
from convnet_repro.experiments.engine.config_checks import validate_config
from convnet_repro.experiments.engine.config_schema import ConfigError
from convnet_repro.experiments.engine.train import expand_children

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_smoke_config_composes_with_typed_groups():
    cfg = compose(["experiment=smoke"])
    assert cfg.trainer.steps == 40
    assert cfg.optimizer._target_ == "keras.optimizers.SGD"
    assert cfg.model.num_classes == cfg.data.num_classes == 4
    assert cfg.tracking.uri.startswith("sqlite:///")
    assert cfg.tracking.uri.endswith("/mlruns.db")
    validate_config(cfg)


@pytest.mark.parametrize(
    "override, words",
    [
        ("trainer.stepz=5", ["stepz"]),
        ("tracking.urii=x", ["urii"]),
        ("optimizer.momentun=0.9", ["momentun"]),
        ("trainer.steps=abc", ["steps", "abc"]),
        ("trainer.strategy=gpu", ["strategy", "gpu"]),
        ("optimizer=adagrad", ["optimizer", "adagrad"]),
        ("schedule=cosine", ["schedule", "cosine"]),
    ],
)
def test_unknown_keys_and_bad_values_fail_at_composition(override, words):
    with pytest.raises(ConfigCompositionException) as info:
        compose(["experiment=smoke", override])
    message = str(info.value) + str(info.value.__cause__)
    for word in words:
        assert word in message


def test_unknown_root_key_in_a_file_fails():
    # A typo'd root key in an experiment file is rejected by the schema.
    from omegaconf.errors import ConfigKeyError

    cfg = compose(["experiment=smoke"])
    with pytest.raises(ConfigKeyError, match="trainr"):
        OmegaConf.merge(cfg, {"trainr": {"steps": 1}})


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["trainer.log_every_steps=7"], "trainer.log_every_steps"),
        (["trainer.eval_every_steps=0"], "trainer.eval_every_steps"),
        (["trainer.steps=45"], "trainer.steps"),
        (["optimizer.learning_rate=-1"], "optimizer.learning_rate"),
        (["optimizer=adam", "+optimizer.momentum=0.9"], "optimizer.momentum"),
        (
            ["schedule=step", "schedule.boundaries=[30,10]"],
            "schedule.boundaries",
        ),
        (["variants={a: {model.nope: 1}}"], "variants.a.model.nope"),
        (["seeds=[1,1]"], "seeds"),
        (["+callbacks.x.y=1"], "callbacks.x"),
    ],
)
def test_relations_are_validated_with_one_line_messages(overrides, key):
    cfg = compose(["experiment=smoke"] + overrides)
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    message = str(info.value)
    assert "\n" not in message
    assert f"Received: {key}=" in message


def test_children_of_variants_and_seeds():
    cfg = compose(
        [
            "experiment=smoke",
            "variants={bn: {model.batch_norm: true}, "
            "plain: ['model.batch_norm=false', 'trainer.steps=20']}",
            "seeds=[3,4]",
        ]
    )
    children = expand_children(cfg)
    # seed-major: a run stopped part-way holds whole comparisons
    assert [c.name for c in children] == [
        "bn-seed3",
        "plain-seed3",
        "bn-seed4",
        "plain-seed4",
    ]
    plain = children[3].cfg
    assert plain.model.batch_norm is False
    assert plain.trainer.steps == 20
    assert plain.seed == 4
    assert plain.data.seed == 4  # interpolation follows the child seed
    assert plain.variants is None and plain.seeds is None
    assert children[0].cfg.model.batch_norm is True
    assert cfg.model.batch_norm is False  # the root is untouched
    dropped = compose(
        [
            "experiment=smoke",
            "variants={bn: {model.batch_norm: true}, plain: null}",
            "seeds=[3]",
        ]
    )
    assert [c.name for c in expand_children(dropped)] == ["bn-seed3"]


def test_every_experiment_file_composes():
    names = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
    assert "smoke" in names
    for name in names:
        cfg = compose([f"experiment={name}"])
        assert cfg.experiment_name


def test_sweeper_and_launcher_configs_compose():
    cfg = compose(
        ["experiment=smoke", "hparams_search=optuna"],
        return_hydra_config=True,
    )
    assert "OptunaSweeper" in cfg.hydra.sweeper._target_
    assert cfg.hydra.sweeper.direction == "minimize"
    assert cfg.optimized_metric == "val/top1_error"
    cfg = compose(
        ["experiment=smoke", "launcher=slurm"], return_hydra_config=True
    )
    assert "SlurmLauncher" in cfg.hydra.launcher._target_


def test_cli_bad_config_exits_with_one_line_before_work(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "convnet_repro.experiments.train",
            "experiment=smoke",
            "trainer.log_every_steps=7",
            f"tracking.uri=sqlite:///{tmp_path}/m.db",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: trainer.log_every_steps must be a multiple")
    assert "Received: trainer.log_every_steps=7" in last
    assert not (tmp_path / "m.db").exists()  # failed before any work
