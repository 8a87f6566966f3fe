"""A store snapshot carries runs, artifacts and checkpoints to a new folder
with the same run ids (experiments/store_snapshot.py)."""

import json
import shutil
import subprocess

import pytest
from mlflow.tracking import MlflowClient

from convnet_repro.experiments import store_snapshot
from convnet_repro.experiments.engine import train as train_lib
from convnet_repro.experiments.engine.compose import compose
from convnet_repro.experiments.engine.compose import fresh_sqlite_store
from tests.experiments.runs import REPO
from tests.experiments.runs import run_killed
from tests.experiments.runs import store_overrides
from tests.experiments.test_resume import OVERRIDES


def _store(root):
    """A store as the engine leaves it: one finished run with a metric and
    an artifact, a checkpoint with its lock file."""
    fresh_sqlite_store(root / "mlruns.db")
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlruns.db'}")
    experiment = client.create_experiment(
        "long", artifact_location=str(root / "mlartifacts")
    )
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "val/top1_error", 24.5, step=8850)
    (root / "model.txt").write_text("weights")
    client.log_artifact(run.info.run_id, str(root / "model.txt"), "model")
    client.set_terminated(run.info.run_id)
    running = client.create_run(experiment).info.run_id
    for run_id, key in ((run.info.run_id, "done"), (running, "key")):
        step = root / "checkpoints" / "long" / key / "step-150"
        step.mkdir(parents=True)
        state = {"run_id": run_id, "step": 150}
        (step / "state.json").write_text(json.dumps(state))
        (step.parent / ".lock").write_text("")
        best = root / "checkpoints" / "early_stopping" / run_id
        best.mkdir(parents=True)
        (best / "best-step-150.npz").write_text("weights")
    return run.info.run_id


def test_restored_store_has_the_same_runs_and_artifacts_elsewhere(tmp_path):
    run_id = _store(tmp_path / "first")
    manifest = store_snapshot.save(tmp_path / "first", tmp_path / "snap")
    assert manifest["runs"] == {"FINISHED": 1, "RUNNING": 1}
    assert not list((tmp_path / "snap").rglob("*.lock"))
    # Only the unfinished run's checkpoints are carried.
    carried = tmp_path / "snap" / "checkpoints"
    assert [p.parts[-3] for p in carried.rglob("state.json")] == ["key"]
    assert run_id not in {p.name for p in carried.glob("early_stopping/*")}
    assert len(list(carried.glob("early_stopping/*"))) == 1

    store_snapshot.restore(tmp_path / "snap", tmp_path / "second")
    shutil.rmtree(tmp_path / "first")  # nothing may still point there
    client = MlflowClient(
        tracking_uri=f"sqlite:///{tmp_path / 'second' / 'mlruns.db'}"
    )
    run = client.get_run(run_id)
    assert run.data.metrics["val/top1_error"] == 24.5
    assert run.info.artifact_uri.startswith(str(tmp_path / "second"))
    local = client.download_artifacts(run_id, "model", str(tmp_path / "dl"))
    assert (tmp_path / "dl" / "model" / "model.txt").read_text() == "weights"
    assert local
    state = tmp_path / "second/checkpoints/long/key/step-150/state.json"
    assert json.loads(state.read_text())["step"] == 150


def test_save_replaces_the_snapshot_and_restore_never_overwrites(tmp_path):
    _store(tmp_path / "first")
    (tmp_path / "snap").mkdir()
    (tmp_path / "snap" / "stale.txt").write_text("old")
    store_snapshot.save(tmp_path / "first", tmp_path / "snap")
    assert not (tmp_path / "snap" / "stale.txt").exists()

    with pytest.raises(FileExistsError, match="already holds a store"):
        store_snapshot.restore(tmp_path / "snap", tmp_path / "first")
    with pytest.raises(SystemExit, match="does not exist; pass --root"):
        store_snapshot.main(
            ["save", "--root", str(tmp_path / "none"), "--to", "x"]
        )
    with pytest.raises(SystemExit, match="Not a store snapshot"):
        store_snapshot.main(
            ["restore", "--from", str(tmp_path), "--root", str(tmp_path / "y")]
        )


def test_a_killed_run_resumes_from_a_restored_snapshot(tmp_path):
    """The long tier's path across machines: killed in store A, saved,
    restored into B (A gone), the same command resumes in B (the overrides
    of the Makefile's STORE=DIR)."""
    first, second = tmp_path / "a", tmp_path / "b"
    fresh_sqlite_store(first / "mlruns.db")
    out = run_killed([*OVERRIDES, *store_overrides(first)])
    assert out.returncode == 3, out.stderr[-3000:]
    store_snapshot.save(first, tmp_path / "snap")
    store_snapshot.restore(tmp_path / "snap", second)
    shutil.rmtree(first)

    result = train_lib.train(compose([*OVERRIDES, *store_overrides(second)]))
    client = MlflowClient(tracking_uri=f"sqlite:///{second}/mlruns.db")
    assert result["status"] == "FINISHED"
    assert result["children"]["first"].get("skipped") is True
    resumed = client.get_run(result["children"]["second"]["run_id"])
    assert resumed.data.tags["resumed_from_step"] == "20"
    logged = client.get_metric_history(resumed.info.run_id, "train/loss")
    assert sorted(m.step for m in logged) == [5, 10, 15, 20, 25, 30, 35, 40]


def test_make_store_points_the_long_tier_and_its_report_at_the_store(tmp_path):
    """`STORE=DIR` passes the overrides the resume test above uses."""
    commands = subprocess.run(
        [
            "make",
            "-n",
            "imagenet-table",
            "SCALE=mini-long",
            f"STORE={tmp_path}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    train = next(line for line in commands.splitlines() if "train" in line)
    assert all(o in train.split() for o in store_overrides(tmp_path))
    assert f"--tracking-uri sqlite:///{tmp_path}/mlruns.db" in commands
