"""Hydra multirun: a grid sweep (`-m a=1,2`) and the optuna sweeper, each
job a separate MLflow run in the same store (slow: whole CLI runs)."""

import pathlib
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from convnet_repro.experiments.engine.compose import fresh_sqlite_store

REPO = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _multirun(tmp, *overrides):
    fresh_sqlite_store(tmp / "mlruns.db")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "convnet_repro.experiments.train",
            "-m",
            "experiment=smoke",
            "trainer.steps=20",
            "tracking.log_model=false",
            "tracking.log_figures=false",
            f"tracking.uri=sqlite:///{tmp}/mlruns.db",
            f"tracking.artifact_location={tmp}/mlartifacts",
            f"paths.checkpoint_dir={tmp}/checkpoints",
            f"paths.output_dir={tmp}/outputs",
            *overrides,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=590,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlruns.db")
    exp = client.get_experiment_by_name("smoke")
    return client.search_runs([exp.experiment_id]), client


def test_grid_multirun_makes_one_run_per_job(tmp_path):
    runs, client = _multirun(tmp_path, "optimizer.learning_rate=0.01,0.05")
    assert sorted(r.data.params["optimizer.learning_rate"] for r in runs) == [
        "0.01",
        "0.05",
    ]
    assert all(r.info.status == "FINISHED" for r in runs)
    # Each job's .hydra folder is logged.
    for run in runs:
        paths = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert "hydra" in paths


def test_optuna_sweeper_minimizes_optimized_metric(tmp_path):
    runs, _ = _multirun(
        tmp_path,
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2",
    )
    assert len(runs) == 2
    lrs = {r.data.params["optimizer.learning_rate"] for r in runs}
    assert len(lrs) == 2  # two sampled points
    best = tmp_path / "outputs" / "multirun"
    (results,) = list(best.rglob("optimization_results.yaml"))
    text = results.read_text()
    assert "best_value" in text
    errors = [r.data.metrics["val/top1_error"] for r in runs]
    assert f"{min(errors)}"[:6] in text
