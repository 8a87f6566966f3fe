"""Kill-and-resume: a killed multi-run experiment, restarted with the same
command, resumes into the same MLflow runs and equals an uninterrupted run."""

import os

import pytest
from mlflow.tracking import MlflowClient

from convnet_repro.experiments.engine import train as train_lib
from convnet_repro.experiments.engine.compose import compose
from convnet_repro.experiments.engine.compose import fresh_sqlite_store
from tests.experiments.runs import run_killed
from tests.experiments.runs import store_overrides as _store_overrides

# Two children; the second is killed at step 25 (checkpoint at 20) when
# REPRO_KILL=1. Callbacks are not part of the run key, so the rerun (without
# REPRO_KILL) finds the same runs.
OVERRIDES = [
    "experiment=smoke",
    "variants={first: {optimizer.learning_rate: 0.05}, "
    "second: {optimizer.learning_rate: 0.02, callbacks.kill.at_step: 25}}",
    "+callbacks.kill._target_=experiments.engine.callbacks.FaultInjection",
    "+callbacks.kill.at_step=1000000",
    "+callbacks.kill.env_var=REPRO_KILL",
    "tracking.log_model=false",
    "tracking.log_figures=false",
    "model.dropout=0.3",  # RNG state must survive the resume too
]
METRICS = ("train/loss", "train/top1_error", "lr", "val/loss", "val/top1_error")


def _children(client, parent_id):
    runs = client.search_runs(
        client.get_run(parent_id).info.experiment_id,
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'",
    )
    return {r.data.tags["repro.child"]: r for r in runs}


def _histories(client, run_id):
    out = {}
    for key in METRICS:
        out[key] = sorted(
            (m.step, m.value) for m in client.get_metric_history(run_id, key)
        )
    return out


def test_killed_run_resumes_into_same_runs_and_matches_uninterrupted(
    tmp_path,
):
    killed = tmp_path / "killed"
    fresh_sqlite_store(killed / "mlruns.db")
    out = run_killed(OVERRIDES + _store_overrides(killed))
    assert out.returncode == 3, out.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{killed}/mlruns.db")
    (exp,) = [e for e in client.search_experiments() if e.name == "smoke"]
    before = {
        r.data.tags.get("repro.child", "parent"): r
        for r in client.search_runs([exp.experiment_id])
    }
    assert before["first"].info.status == "FINISHED"
    assert before["second"].info.status == "RUNNING"  # killed
    logged = [
        m.step
        for m in client.get_metric_history(
            before["second"].info.run_id, "train/loss"
        )
    ]
    assert sorted(logged) == [5, 10, 15, 20]

    # The same command again (in-process, REPRO_KILL unset).
    assert os.environ.get("REPRO_KILL") != "1"
    result = train_lib.train(compose(OVERRIDES + _store_overrides(killed)))
    assert result["status"] == "FINISHED"
    assert result["run_id"] == before["parent"].info.run_id
    assert result["children"]["first"].get("skipped") is True
    children = _children(client, result["run_id"])
    assert set(children) == {"first", "second"}
    for name in ("first", "second"):
        assert children[name].info.run_id == before[name].info.run_id
        assert children[name].info.status == "FINISHED"
    assert children["second"].data.tags["resumed_from_step"] == "20"

    # Reference: the same experiment without a kill, in a fresh store.
    ref_dir = tmp_path / "reference"
    fresh_sqlite_store(ref_dir / "mlruns.db")
    reference = train_lib.train(compose(OVERRIDES + _store_overrides(ref_dir)))
    ref_client = MlflowClient(tracking_uri=f"sqlite:///{ref_dir}/mlruns.db")
    ref_children = _children(ref_client, reference["run_id"])
    for name in ("first", "second"):
        got = _histories(client, children[name].info.run_id)
        want = _histories(ref_client, ref_children[name].info.run_id)
        for key in METRICS:
            # Every step exactly once, same values.
            assert [s for s, _ in got[key]] == [s for s, _ in want[key]], key
            assert [v for _, v in got[key]] == pytest.approx(
                [v for _, v in want[key]], rel=1e-6, abs=1e-7
            ), (name, key)
    assert [s for s, _ in got["train/loss"]] == [5, 10, 15, 20, 25, 30, 35, 40]
