"""AlexNet Table 2's pre-trained rows ("1 CNN*", "7 CNNs*"): the configs
compose and build, the ImageNet-21k folder is named when absent, the
7-model row borrows the other experiments' runs, and the table report
lists all five rows with only measured numbers in the "ours" columns."""

import mlflow
import pytest

from convnet_repro.experiments.engine import build
from convnet_repro.experiments.engine import config_checks
from convnet_repro.experiments.engine.compose import compose
from convnet_repro.experiments.engine.compose import fresh_sqlite_store
from convnet_repro.experiments.engine.exit_codes import MissingDataError
from convnet_repro.experiments.engine.train import expand_children
from convnet_repro.experiments.evaluation import report_hook
from convnet_repro.experiments.reports import imagenet_orderings
from convnet_repro.experiments.reports import imagenet_output
from tests.experiments.test_imagenet_table import _row

CONFIGS = (
    "imagenet21k_alexnet_conv6_pretrain",
    "imagenet_alexnet_1cnn_pretrained",
    "imagenet_alexnet_7cnns_pretrained",
)
# A mini build of the model node (small input, narrow).
TINY = [
    "data.input_shape=[32,32,3]",
    "data.num_classes=7",
    "model.small_input=true",
    "model.width_multiplier=0.125",
]


@pytest.mark.parametrize("name", CONFIGS)
def test_configs_compose_validate_and_build(name, tmp_path):
    cfg = compose([f"experiment={name}"], tmp_path)
    config_checks.validate_config(cfg)
    for child in expand_children(cfg) or [None]:
        config_checks.validate_config(child.cfg if child else cfg)
    assert cfg.model.extra_conv6 is True
    assert cfg.optimizer.momentum == 0.9
    small = compose([f"experiment={name}", *TINY], tmp_path)
    model = build.instantiate(small.model, "model")
    assert model.get_layer("conv6_conv") and model.output.shape[-1] == 7


def test_pretraining_names_the_imagenet21k_folder_when_absent(tmp_path):
    cfg = compose(
        [
            "experiment=imagenet21k_alexnet_conv6_pretrain",
            f"data.local_dir={tmp_path}",
        ],
        tmp_path,
    )
    assert cfg.data.name == "imagenet21k" and list(cfg.seeds) == [0, 1]
    strategy = __import__("tensorflow").distribute.get_strategy()
    with pytest.raises(MissingDataError, match="imagenet21k/") as e:
        build.build_run(cfg, strategy)
    assert "\n" not in str(e.value)


def test_fine_tuning_configs_pair_the_two_pretrained_nets():
    one = compose(["experiment=imagenet_alexnet_1cnn_pretrained"])
    seven = compose(["experiment=imagenet_alexnet_7cnns_pretrained"])
    assert one.finetune.source.endswith("/1")
    assert seven.finetune.source.endswith("/2") and seven.seed == 1

    def data(cfg):  # the data keys scoring compares (seed aside)
        return {k: v for k, v in cfg.data.items() if k != "seed"}

    assert data(one) == data(seven)  # the 7 members share one data config
    (row,) = seven.report.rows
    assert list(row.with_experiments) == [
        "imagenet_alexnet_5cnns",
        "imagenet_alexnet_1cnn_pretrained",
    ]
    five = compose(["experiment=imagenet_alexnet_5cnns"])
    assert data(five) == data(one)


def test_a_row_borrows_the_runs_of_other_experiments(tmp_path):
    uri = f"sqlite:///{fresh_sqlite_store(tmp_path / 'm.db')}"
    client = mlflow.MlflowClient(uri)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        exp = client.create_experiment("five")
        parent = client.create_run(exp).info.run_id
        kids = [
            client.create_run(
                exp, tags={"mlflow.parentRunId": parent}
            ).info.run_id
            for _ in range(5)
        ]
        for rid in [parent, *kids]:
            client.set_terminated(rid, "FINISHED")
        stale = client.create_run(exp).info.run_id  # unfinished: ignored
        assert stale not in report_hook._experiment_runs("five")
        assert sorted(report_hook._experiment_runs("five")) == sorted(kids)
        with pytest.raises(ValueError, match="no finished run"):
            report_hook._experiment_runs("nothing")
    finally:
        mlflow.set_tracking_uri(previous)


def test_table2_lists_all_five_rows_ours_only_where_measured():
    one = _row("AlexNet", "AlexNet, 1 CNN", "ten_crop", 44.0, top5=20.0)
    star = _row("AlexNet", "AlexNet, 1 CNN*", "ten_crop", 43.0, top5=19.5)
    lines = imagenet_output.alexnet_table2([one, star], "full")
    body = [ln for ln in lines if ln.startswith("| ") and "---" not in ln]
    assert [ln.split(" | ")[0] for ln in body[1:]] == [
        "| SIFT + FVs",
        "| 1 CNN",
        "| 5 CNNs",
        "| 1 CNN*",
        "| 7 CNNs*",
    ]
    cells = {ln.split(" | ")[0][2:]: ln.split(" | ") for ln in body[1:]}
    assert cells["SIFT + FVs"][1:6] == ["–", "–", "26.20", "–", "–"]
    assert cells["1 CNN"][1:6] == ["40.70", "18.20", "–", "44.00", "20.00"]
    assert cells["1 CNN*"][4:6] == ["43.00", "19.50"]
    # Unmeasured rows never show the paper's number as ours.
    assert cells["7 CNNs*"][1:6] == ["36.70", "15.40", "15.30", "–", "–"]
    assert "imagenet_alexnet_7cnns_pretrained" in cells["7 CNNs*"][6]
    assert "ours, full" in body[0]
    (check,) = [
        c
        for c in imagenet_orderings.check_orderings([one, star])
        if c["claim"] == "pre-trained* < from scratch"
    ]
    assert check["holds"]
    md = imagenet_output.format_markdown([one], [], scale="mini")
    assert "not comparable" in md and "| 7 CNNs* |" in md
