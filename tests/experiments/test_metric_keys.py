"""The metric-key contract (`engine.metric_keys`) against the engine.

A real two-step `experiment=smoke` run must hold exactly the keys the
contract names (and a multi-seed parent its `mean/` and `curve/` keys);
every metric key a config or a report default names must be a contract key,
so a report can never again default to a key the engine does not write.
"""

import inspect

import mlflow
import pytest
import yaml

from convnet_repro.experiments.engine import metric_keys as mk
from convnet_repro.experiments.engine import train as train_lib
from convnet_repro.experiments.engine.compose import CONF_DIR
from convnet_repro.experiments.engine.compose import compose

TWO_STEPS = [
    "experiment=smoke",
    "trainer.steps=2",
    "trainer.steps_per_execution=1",
    "trainer.eval_every_steps=2",
    "trainer.log_every_steps=1",
    "trainer.checkpoint_every_steps=2",
    "trainer.progress=none",
]
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


pytestmark = pytest.mark.usefixtures("restore_tracking_uri")


def test_keys_are_built_as_documented():
    assert mk.val_key(mk.TOP1_ACCURACY) == "val/top1_accuracy"
    assert mk.train_key(mk.LOSS) == "train/loss"
    assert mk.population_key(mk.VAL_TOP1_ERROR) == "val/top1_error_population"
    assert mk.mean_key(mk.VAL_TOP5_ERROR) == "mean/val/top5_error"
    assert mk.curve_key(mk.VAL_LOSS, "bn") == "curve/val/loss/bn"
    assert mk.error_name(mk.accuracy_name(3)) == "top3_error"
    with pytest.raises(ValueError, match="Received: accuracy='loss'"):
        mk.error_name("loss")
    assert mk.training_run_keys(top_k=1) == sorted(
        ["lr", "train/loss", "train/top1_accuracy", "train/top1_error"]
        + ["val/loss", "val/top1_accuracy", "val/top1_error"]
    )


IS_RUN_KEY = [
    ("val/top1_accuracy", True),
    ("val/top5_error_population", True),
    ("mean/val/top1_error", True),
    ("curve/val/top1_accuracy/bn_x5", True),
    ("lr", True),
    ("train/loss", True),
    ("val_accuracy", False),  # Keras' log name, never logged
    ("accuracy", False),
    ("val/accuracy", False),
    ("train/top1_accuracy_population", False),  # only val/ is rescored
    ("mean/train/loss", False),  # parents average final val/ keys only
    ("curve/val/top1_accuracy", False),  # no variant
    ("top1_error", False),  # an evaluation run's key, not a training one
]


def test_is_run_key():  # one test: each pytest case costs ~1 s here
    got = [(key, mk.is_run_key(key)) for key, _ in IS_RUN_KEY]
    assert got == IS_RUN_KEY


def _metric_keys(run_id):
    return set(mlflow.MlflowClient().get_run(run_id).data.metrics)


def test_a_real_run_holds_exactly_the_contract_keys(tmp_path):
    overrides = [*TWO_STEPS, "model.batch_norm=true"]
    overrides += ["trainer.bn_population_stats=true"]
    overrides += ["trainer.bn_population_batches=2"]
    cfg = compose(overrides, tmp_path)
    result = train_lib.train(cfg)
    assert result["status"] == "FINISHED"
    want = mk.training_run_keys(cfg.trainer.top_k, population=True)
    assert sorted(_metric_keys(result["run_id"])) == want
    # The returned finals are the val/ keys (population ones included).
    finals = {k for k in result if k.startswith(mk.VAL_PREFIX)}
    assert finals == {k for k in want if k.startswith(mk.VAL_PREFIX)}


def test_a_parent_holds_mean_and_curve_keys_of_the_contract(tmp_path):
    # Two evaluations per child: a curve needs two points.
    overrides = [*TWO_STEPS, "seeds=[0,1]", "trainer.steps=4"]
    cfg = compose([*overrides, "tracking.log_figures=false"], tmp_path)
    result = train_lib.train(cfg)
    assert result["status"] == "FINISHED"
    keys = _metric_keys(result["run_id"])
    finals = [
        k
        for k in mk.training_run_keys(cfg.trainer.top_k)
        if k.startswith(mk.VAL_PREFIX)
    ]
    assert {mk.mean_key(k) for k in finals} <= keys
    assert any(k.startswith(mk.CURVE_PREFIX) for k in keys), sorted(keys)
    assert [k for k in keys if not mk.is_run_key(k)] == []


def _config_metric_keys(node, path=""):
    """(path, value) of every `*metric*` string under `report:`."""
    if isinstance(node, dict):
        for k, v in node.items():
            if "metric" in str(k) and isinstance(v, str):
                yield f"{path}{k}", v
            yield from _config_metric_keys(v, f"{path}{k}.")


@pytest.mark.slow  # ~15-35 s: Hydra composes ~40 configs
def test_composed_config_metric_keys_are_contract_keys():
    from omegaconf import OmegaConf

    bad = []
    for name in EXPERIMENTS:  # one test: composing is cheap, setup is not
        cfg = compose([f"experiment={name}"])
        found = [("optimized_metric", cfg.optimized_metric)]
        if cfg.get("report") is not None:
            report = OmegaConf.to_container(cfg.report, resolve=False)
            found += list(_config_metric_keys(report, "report."))
        bad += [(name, p, v) for p, v in found if not mk.is_run_key(v)]
    assert bad == [], f"not keys the engine logs: {bad}"


def test_every_metric_key_written_in_conf_is_a_contract_key():
    """The fast form of the test above: every `optimized_metric` and every
    `*metric*` under a `report:` block of every YAML file in `conf/`."""
    found = []
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        node = yaml.safe_load(path.read_text()) or {}
        if not isinstance(node, dict):
            continue
        if isinstance(node.get("optimized_metric"), str):
            found.append(
                (path.name, "optimized_metric", node["optimized_metric"])
            )
        for key, value in _config_metric_keys(node.get("report") or {}):
            found.append((path.name, f"report.{key}", value))
    names = {f for f, _, _ in found}
    assert {"train.yaml", "optuna.yaml", "bn_mnist.yaml"} <= names
    bad = [f for f in found if not mk.is_run_key(f[2])]
    assert bad == [], f"not keys the engine logs: {bad}"


def _metric_defaults():
    from convnet_repro.experiments.engine import callbacks
    from convnet_repro.experiments.engine import summary
    from convnet_repro.experiments.reports import bn_inception
    from convnet_repro.experiments.reports import bn_mnist

    functions = [
        bn_inception.report,
        bn_inception.fetch_histories,
        bn_mnist.report,
        callbacks.StepLogger.__init__,
    ]
    out = [("summary._METRIC", summary._METRIC)]
    for fn in functions:
        for name, param in inspect.signature(fn).parameters.items():
            if "metric" in name and isinstance(param.default, str):
                out.append((f"{fn.__qualname__}({name}=)", param.default))
    return out


def test_report_defaults_are_contract_keys():
    defaults = _metric_defaults()
    assert len(defaults) >= 5  # every function above has a metric default
    bad = [(w, v) for w, v in defaults if not mk.is_run_key(v)]
    assert bad == []
