"""Fine-tuning end to end: train -> fine-tune from its run (other label
set) -> kill -> resume (same MLflow run, every step once, the source not
read again) -> `python -m convnet_repro.experiments.evaluate` on the
fine-tuned run."""

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from convnet_repro.experiments.engine import train as train_lib
from convnet_repro.experiments.engine.compose import compose
from convnet_repro.experiments.engine.compose import fresh_sqlite_store
from tests.experiments.runs import run_module as _python
from tests.experiments.runs import store_overrides as _store

QUIET = ["tracking.log_figures=false"]


@pytest.mark.slow
def test_train_finetune_kill_resume_evaluate(tmp_path):
    fresh_sqlite_store(tmp_path / "mlruns.db")
    previous = mlflow.get_tracking_uri()
    try:
        source = train_lib.train(
            compose(["experiment=smoke", "trainer.steps=20", *QUIET], tmp_path)
        )
    finally:
        mlflow.set_tracking_uri(previous)
    assert source["status"] == "FINISHED"
    src_id = source["run_id"]
    tune = [
        "experiment=smoke",
        "experiment_name=smoke_finetune",
        "data.num_classes=3",  # a new label set: the head is rebuilt
        f"finetune.source=runs:/{src_id}",
        "finetune.head_lr_multiplier=10",
        "+callbacks.kill._target_=experiments.engine.callbacks.FaultInjection",
        "+callbacks.kill.at_step=25",
        "+callbacks.kill.env_var=REPRO_KILL",
        *QUIET,
        *_store(tmp_path),
    ]
    killed = _python("convnet_repro.experiments.train", tune, REPRO_KILL="1")
    assert killed.returncode == 3, killed.stderr[-3000:]
    # The source artifact goes away: the resume must not need it.
    (artifact,) = (tmp_path / "mlartifacts").rglob(f"{src_id}/**/*.keras")
    artifact.rename(artifact.with_suffix(".gone"))
    resumed = _python("convnet_repro.experiments.train", tune)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns.db")
    exp = client.get_experiment_by_name("smoke_finetune")
    (run,) = client.search_runs([exp.experiment_id])  # one run, resumed
    assert run.info.status == "FINISHED"
    assert run.data.tags["resumed_from_step"] == "20"
    assert run.data.tags["finetune.source_run_id"] == src_id
    assert src_id in run.data.tags["mlflow.note.content"]
    assert run.data.params["finetune.source"] == f"runs:/{src_id}"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "lr")]
    assert sorted(steps) == sorted(set(steps)) and max(steps) == 40

    scored = _python(
        "convnet_repro.experiments.evaluate",
        [
            run.info.run_id,
            "--experiment",
            "smoke",
            "--override",
            "data.num_classes=3",
            "--tracking-uri",
            f"sqlite:///{tmp_path}/mlruns.db",
            "--row",
            "smoke, fine-tuned",
        ],
    )
    assert scored.returncode == 0, scored.stderr[-3000:]
    (ev,) = [
        r
        for r in client.search_runs(
            [client.get_experiment_by_name("imagenet_table").experiment_id]
        )
        if r.data.tags.get("row") == "smoke, fine-tuned"
    ]
    assert ev.data.params["sources"] == run.info.run_id
    # 3 classes of separable blobs after 40 steps: better than chance.
    assert ev.data.metrics["top1_error"] < 60
