"""The mini `imagenette_*` experiments through the engine and their report
hook: two training steps on a few real Imagenette images, then the
config's `report:` rows scored into the `imagenet_table` experiment."""

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from convnet_repro.experiments.data import protocol_views as pv
from convnet_repro.experiments.engine import train as train_lib
from convnet_repro.experiments.engine.compose import compose
from convnet_repro.experiments.evaluation import predict
from convnet_repro.experiments.evaluation import scoring
from convnet_repro.experiments.evaluation import sources
from tests.helpers import needs_imagenette

NUM_IMAGES = 8
TINY = [
    "data.num_train_examples=32",
    "data.num_val_examples=16",
    "data.batch_size=8",
    "trainer.steps=2",
    "trainer.steps_per_execution=1",
    "trainer.eval_every_steps=2",
    "trainer.checkpoint_every_steps=2",
    "trainer.log_every_steps=2",
    "trainer.jit_compile=false",
    f"report.max_images={NUM_IMAGES}",
    "report.batch_size=8",
]
# experiment -> extra overrides (fewer members where the paper has many).
MINI = {
    "imagenette_alexnet_5cnns": ["seeds=[0,1]"],
    "imagenette_resnet18": [],
    "imagenette_vgg_a": [],
    "imagenette_googlenet": [],
}


pytestmark = pytest.mark.usefixtures("restore_tracking_uri")


def _center_errors(run_ids, data_cfg):
    """Top-1/top-5 error (%) of the averaged softmax of `run_ids`' models on
    the centre view of the first NUM_IMAGES validation images, in numpy."""
    ds, _ = predict.eval_dataset(data_cfg, NUM_IMAGES)  # as the report
    pairs = list(ds.take(NUM_IMAGES))
    views = np.concatenate(
        [
            pv.image_views(x, "center", crop=56, resize=64).numpy()
            for x, _ in pairs
        ]
    )
    labels = np.array([int(y) for _, y in pairs])
    probs = 0.0
    for run_id in run_ids:
        logits = sources.load_model(run_id).predict(views, verbose=0)
        if isinstance(logits, dict):
            logits = logits["logits"]
        probs = probs + scoring.softmax(np.asarray(logits, "float64"))
    probs = probs / len(run_ids)
    return tuple(100 * scoring.top_k_error(probs, labels, k) for k in (1, 5))


@pytest.mark.slow
@needs_imagenette
@pytest.mark.parametrize("experiment", list(MINI))
def test_mini_experiment_trains_and_its_report_scores_the_rows(
    tmp_path, experiment
):
    cfg = compose(
        [f"experiment={experiment}", *TINY, *MINI[experiment]], tmp_path
    )
    result = train_lib.train(cfg)
    assert result["status"] == "FINISHED"
    client = MlflowClient()
    parent = client.get_run(result["run_id"])
    trained = [
        r.info.run_id
        for r in client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{result['run_id']}'",
        )
    ] or [result["run_id"]]
    table = client.get_experiment_by_name(cfg.report.experiment_name)
    runs = client.search_runs([table.experiment_id])
    # One evaluation run per config row, tagged and sourced from this
    # experiment's trained runs.
    expected_rows = sorted((r.row, r.protocol) for r in cfg.report.rows)
    got_rows = sorted(
        (r.data.tags["row"], r.data.params["protocol"]) for r in runs
    )
    assert got_rows == expected_rows
    for run in runs:
        members = run.data.params["sources"].split(",")
        assert set(members) <= set(trained), run.data.tags["row"]
        assert run.data.params["num_images"] == str(NUM_IMAGES)
        assert run.data.tags["scale"] == "mini"
        if run.data.params["protocol"] == "center":
            top1, top5 = _center_errors(members, cfg.data)
            metrics = run.data.metrics
            assert metrics["top1_error"] == pytest.approx(top1, abs=1e-4)
            assert metrics["top5_error"] == pytest.approx(top5, abs=1e-4)
    # The ensemble rows hold every member ("all" = both seeds here).
    if experiment == "imagenette_alexnet_5cnns":
        sizes = {
            r.data.tags["row"]: len(r.data.params["sources"].split(","))
            for r in runs
        }
        assert sizes == {"AlexNet, 1 CNN": 1, "AlexNet, 5 CNNs": 2}
