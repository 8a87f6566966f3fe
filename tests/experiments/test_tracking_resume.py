"""Resumed runs tell the same story as uninterrupted ones: callback metrics
(the BN paper's Fig. 1 probe) have every step once after a kill, a parent's
`mean/*` do not depend on which children were resumed or skipped, and a run
that recovers loses its failure tags."""

import os

import pytest
from mlflow.tracking import MlflowClient

from convnet_repro.experiments.engine import train as train_lib
from convnet_repro.experiments.engine.compose import compose
from convnet_repro.experiments.engine.compose import fresh_sqlite_store
from tests.experiments.runs import run_killed
from tests.experiments.runs import store_overrides

QUIET = ["tracking.log_model=false", "tracking.log_figures=false"]
TWO = "first: {optimizer.learning_rate: 0.05}"
# The second child diverges (NaN loss from batch 25: FAILED at step 30,
# checkpoint kept at 20) until the same command is rerun without the NaNs;
# the explicit run key keeps the run ids across the two configs.
SECOND_NAN = (
    "second: {optimizer.learning_rate: 0.02, data.nan_after_batches: 25}"
)
SECOND = "second: {optimizer.learning_rate: 0.02}"


def _store(tmp):
    fresh_sqlite_store(tmp / "mlruns.db")
    return store_overrides(tmp)


def _steps(client, run_id, key):
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def _runs(client, run_id):
    parent = client.get_run(run_id)
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'",
    )
    return parent, {r.data.tags["repro.child"]: r for r in runs}


@pytest.mark.slow
def test_recovered_multirun_clears_failure_tags_and_keeps_parent_means(
    tmp_path,
):
    base = ["experiment=smoke", "tracking.run_key=recover"] + QUIET
    store = _store(tmp_path / "store")
    failing = train_lib.train(
        compose(base + [f"variants={{{TWO}, {SECOND_NAN}}}"] + store)
    )
    assert failing["status"] == "FAILED"
    client = MlflowClient(tracking_uri=store[0].split("=", 1)[1])
    parent, children = _runs(client, failing["run_id"])
    assert parent.data.tags["failed_children"] == "second"
    assert "non-finite" in children["second"].data.tags["failure_reason"]

    # The same command, the data fixed: `first` is skipped, `second` resumes.
    result = train_lib.train(
        compose(base + [f"variants={{{TWO}, {SECOND}}}"] + store)
    )
    assert result["status"] == "FINISHED"
    assert result["children"]["first"].get("skipped") is True
    parent, children = _runs(client, result["run_id"])
    assert parent.info.status == "FINISHED"
    assert "failed_children" not in parent.data.tags
    second = children["second"]
    assert second.info.status == "FINISHED"
    assert "failure_reason" not in second.data.tags
    assert second.data.tags["resumed_from_step"] == "20"
    assert _steps(client, second.info.run_id, "train/loss") == list(
        range(5, 41, 5)
    )

    # Reference: both children trained in one go, in a fresh store.
    ref_store = _store(tmp_path / "reference")
    reference = train_lib.train(
        compose(base + [f"variants={{{TWO}, {SECOND}}}"] + ref_store)
    )
    ref_client = MlflowClient(tracking_uri=ref_store[0].split("=", 1)[1])
    ref_parent, _ = _runs(ref_client, reference["run_id"])
    got = parent.data.metrics
    want = ref_parent.data.metrics
    assert set(got) == set(want)  # no mean over a subset of children
    # The parent holds the seed means and the seed-mean curves (compare.py).
    assert all(k.startswith(("mean/val/", "curve/val/")) for k in got)
    assert any(k.startswith("curve/val/") for k in got)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert {k: v for k, v in result.items() if k.startswith("val/")} == {
        k[len("mean/") :]: v for k, v in got.items() if k.startswith("mean/")
    }


@pytest.mark.slow
def test_probe_metrics_have_each_step_once_after_kill_and_resume(tmp_path):
    overrides = [
        "experiment=smoke",
        "trainer.checkpoint_every_steps=20",
        "+callbacks.probe._target_=experiments.probes.PercentileProbe",
        "+callbacks.probe.layer=hidden_relu",
        "+callbacks.probe.units=[0,3]",
        "+callbacks.probe.every_steps=5",
        "+callbacks.probe.num_images=32",
        "+callbacks.probe.data=${data}",
        "+callbacks.kill._target_=experiments.engine.callbacks.FaultInjection",
        "+callbacks.kill.at_step=35",
        "+callbacks.kill.env_var=REPRO_KILL",
    ] + QUIET
    store = _store(tmp_path)
    killed = run_killed(overrides + store)
    assert killed.returncode == 3, killed.stderr[-3000:]
    client = MlflowClient(tracking_uri=store[0].split("=", 1)[1])
    (run,) = client.search_runs(
        [client.get_experiment_by_name("smoke").experiment_id]
    )
    key = "sigmoid_in_u3_p85"
    # Killed at 35, checkpoint at 20: the store has probes up to >= 20.
    assert _steps(client, run.info.run_id, key)[:5] == [0, 5, 10, 15, 20]

    assert os.environ.get("REPRO_KILL") != "1"
    result = train_lib.train(compose(overrides + store))
    assert result["run_id"] == run.info.run_id
    assert client.get_run(run.info.run_id).data.tags["resumed_from_step"] == (
        "20"
    )
    for unit in (0, 3):
        for q in (15, 50, 85):
            key = f"sigmoid_in_u{unit}_p{q}"
            steps = _steps(client, run.info.run_id, key)
            assert steps == list(range(0, 41, 5)), key
