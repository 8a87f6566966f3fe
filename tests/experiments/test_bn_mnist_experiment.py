"""The `bn_mnist` experiment (BN paper Sec. 4.1, Fig. 1) end to end.

Fast: the config composes with the paper's settings and validates. Slow: a
shortened run (3,000 steps, 1 seed, real MNIST) has the shape of Fig. 1:
BN ahead of the baseline, ordered percentile curves, one parent run with a
child per variant, and the table and figures written.
"""

import os
import pathlib

import pytest

from convnet_repro.experiments.engine.compose import compose
from tests.experiments.training import metric_history
from tests.experiments.training import train_with_report

MNIST_DIR = pathlib.Path(os.environ.get("CONVNET_REPRO_DATA_DIR", "")) / "mnist"


def test_config_has_the_paper_settings(tmp_path):
    from convnet_repro.experiments.engine.config_checks import validate_config
    from convnet_repro.experiments.engine.train import expand_children

    cfg = compose(["experiment=bn_mnist"], tmp_path=tmp_path)
    validate_config(cfg)
    assert cfg.trainer.steps == 50_000
    assert cfg.data.batch_size == 60
    assert cfg.data.binarize is True
    assert list(cfg.model.hidden_units) == [100, 100, 100]
    assert cfg.model.activation == "sigmoid"
    assert cfg.optimizer._target_ == "keras.optimizers.SGD"
    assert cfg.optimizer.momentum == 0.0
    assert cfg.trainer.bn_population_stats is True
    assert cfg.trainer.eval_every_steps % cfg.trainer.steps_per_execution == 0
    probe = cfg.callbacks.sigmoid_percentiles
    assert probe.layer == "hidden3_act"
    assert probe.every_steps == cfg.trainer.eval_every_steps
    children = expand_children(cfg)
    assert sorted(c.name for c in children) == [
        f"{v}-seed{s}" for v in ("baseline", "bn") for s in range(5)
    ]
    for child in children:
        assert child.cfg.model.batch_norm is (child.variant == "bn")
        validate_config(child.cfg)


def test_greyscale_switch(tmp_path):
    cfg = compose(["experiment=bn_mnist", "data.binarize=false"], tmp_path)
    assert cfg.data.binarize is False
    # The probe sees the same preprocessing as training.
    assert cfg.callbacks.sigmoid_percentiles.data.binarize is False


def test_short_config_is_the_full_one_shortened(tmp_path):
    full = compose(["experiment=bn_mnist"], tmp_path=tmp_path)
    short = compose(["experiment=bn_mnist_short"], tmp_path=tmp_path)
    assert short.trainer.steps == 3000 and list(short.seeds) == [0]
    assert short.experiment_name != full.experiment_name
    for key in ("data", "model", "optimizer", "variants"):
        assert short[key] == full[key], key
    assert short.report.results_dir != full.report.results_dir


def test_lr01_config_changes_only_the_learning_rate(tmp_path):
    full = compose(["experiment=bn_mnist"], tmp_path=tmp_path)
    lr01 = compose(["experiment=bn_mnist_lr01"], tmp_path=tmp_path)
    assert lr01.optimizer.learning_rate == 0.1
    assert full.optimizer.learning_rate == 0.5
    for key in ("data", "model", "trainer", "variants"):
        assert lr01[key] == full[key], key
    # Fewer seeds (time), but the same ones: the tuning-split check pairs
    # each lr 0.1 run with the lr 0.5 run of the same seed.
    assert set(lr01.seeds) < set(full.seeds)
    assert lr01.report.results_dir != full.report.results_dir


def test_grey_config_changes_only_the_input(tmp_path):
    full = compose(["experiment=bn_mnist"], tmp_path=tmp_path)
    grey = compose(["experiment=bn_mnist_grey"], tmp_path=tmp_path)
    assert full.data.binarize is True and grey.data.binarize is False
    assert grey.callbacks.sigmoid_percentiles.data.binarize is False
    for key in ("model", "optimizer", "trainer", "variants"):
        assert grey[key] == full[key], key
    assert {k: v for k, v in grey.data.items() if k != "binarize"} == {
        k: v for k, v in full.data.items() if k != "binarize"
    }
    assert set(grey.seeds) <= set(full.seeds)
    assert grey.report.results_dir != full.report.results_dir


@pytest.mark.slow
@pytest.mark.skipif(
    not MNIST_DIR.is_dir(), reason="needs the MNIST IDX files offline"
)
def test_short_run_has_the_shape_of_fig1(tmp_path):
    from mlflow.tracking import MlflowClient

    # 3,000 steps, 1 seed, eval / 500
    out, results = train_with_report(tmp_path, ["experiment=bn_mnist_short"])
    client = MlflowClient()
    parent_id = out["run_id"]
    parent = client.get_run(parent_id)
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'",
    )
    by_variant = {c.data.tags["variant"]: c for c in children}
    assert sorted(by_variant) == ["baseline", "bn"]

    acc = {
        v: metric_history(client, c.info.run_id, "val/top1_accuracy")
        for v, c in by_variant.items()
    }
    assert [s for s, _ in acc["bn"]] == list(range(500, 3001, 500))
    base = [a for _, a in acc["baseline"]]
    bn = [a for _, a in acc["bn"]]
    # Fig. 1(a): BN trains faster. Early on by a wide margin, and on average
    # over the curve; final accuracy with population statistics too.
    assert bn[0] > base[0] + 0.05, (bn, base)
    assert sum(bn) / len(bn) > sum(base) / len(base) + 0.01, (bn, base)
    pop = by_variant["bn"].data.metrics["val/top1_accuracy_population"]
    assert pop > base[-1], (pop, base)

    # Fig. 1(b, c): percentile curves from step 0, ordered 15 <= 50 <= 85.
    for variant, child in by_variant.items():
        curves = [
            metric_history(client, child.info.run_id, f"sigmoid_in_u0_p{q}")
            for q in (15, 50, 85)
        ]
        steps = [s for s, _ in curves[0]]
        assert steps == list(range(0, 3001, 500)), variant
        for (_, p15), (_, p50), (_, p85) in zip(*curves):
            assert p15 <= p50 <= p85, variant
        # After training the unit's input is spread over the images.
        assert curves[2][-1][1] - curves[0][-1][1] > 0.1, variant

    for name in (
        "table.md",
        "table.csv",
        "fig1.png",
        "fig1a_test_accuracy.png",
        "fig1b_sigmoid_input_no_bn.png",
        "fig1c_sigmoid_input_bn.png",
    ):
        assert (results / name).stat().st_size > 0, name
    artifacts = {a.path for a in client.list_artifacts(parent_id, "report")}
    assert {"report/fig1.png", "report/table.md"} <= artifacts
    assert "With BN" in (results / "table.md").read_text()
