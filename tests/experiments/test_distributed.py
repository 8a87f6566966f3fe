"""`trainer.strategy`: mirrored on two logical CPU devices, and multi-worker
with two local worker processes on 127.0.0.1 (TF_CONFIG), in subprocesses
(a TF process cannot change its devices or cluster once initialized)."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from convnet_repro.experiments.engine.compose import fresh_sqlite_store

REPO = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _command(tmp, *overrides):
    return [
        sys.executable,
        "-m",
        "convnet_repro.experiments.train",
        "experiment=smoke",
        "trainer.steps=20",
        "tracking.log_model=true",
        f"tracking.uri=sqlite:///{tmp}/mlruns.db",
        f"tracking.artifact_location={tmp}/mlartifacts",
        f"paths.checkpoint_dir={tmp}/checkpoints",
        f"paths.output_dir={tmp}/outputs",
        *overrides,
    ]


def _only_run(tmp):
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlruns.db")
    (exp,) = [e for e in client.search_experiments() if e.name == "smoke"]
    (run,) = client.search_runs([exp.experiment_id])
    return client, run


def _history(client, run, key):
    return sorted(
        (m.step, m.value)
        for m in client.get_metric_history(run.info.run_id, key)
    )


def _check_logged_val_metrics(client, run, tmp):
    """The run's val/loss and val/top1_error at step 20 equal those of its
    logged model on the 64 validation examples, computed here in numpy: the
    replicas' (or workers') partial evaluations were combined over the whole
    set, not taken from one replica."""
    import keras
    import numpy as np

    from convnet_repro.experiments.data.synthetic import make_blob_datasets

    path = client.download_artifacts(
        run.info.run_id, "model/model.keras", str(tmp)
    )
    model = keras.saving.load_model(path, compile=False)
    _, val_ds = make_blob_datasets(seed=0)
    x = np.concatenate([x for x, _ in val_ds])
    y = np.concatenate([y for _, y in val_ds])
    z = keras.ops.convert_to_numpy(model(x)).astype("float64")
    z -= z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = -np.mean(log_p[np.arange(len(y)), y])
    error = np.mean(np.argmax(z, axis=1) != y)
    assert dict(_history(client, run, "val/loss"))[20] == pytest.approx(
        loss, rel=1e-4
    )
    assert run.data.metrics["val/top1_error"] == pytest.approx(error)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mirrored_on_two_logical_cpus(tmp_path):
    fresh_sqlite_store(tmp_path / "mlruns.db")
    out = subprocess.run(
        _command(
            tmp_path,
            "trainer.strategy=mirrored",
            "trainer.logical_cpu_devices=2",
        ),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    client, run = _only_run(tmp_path)
    assert run.info.status == "FINISHED"
    assert run.data.tags["strategy"] == "MirroredStrategy"
    assert run.data.tags["num_replicas_in_sync"] == "2"
    losses = _history(client, run, "train/loss")
    assert [s for s, _ in losses] == [5, 10, 15, 20]
    _check_logged_val_metrics(client, run, tmp_path)


def test_multi_worker_with_two_local_workers(tmp_path):
    fresh_sqlite_store(tmp_path / "mlruns.db")
    stray_store = REPO / "mlflow.db"  # MLflow's default store, in the cwd
    stray_before = stray_store.exists()
    workers = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
    procs = []
    for index in range(2):
        tf_config = {
            "cluster": {"worker": workers},
            "task": {"type": "worker", "index": index},
        }
        env = dict(os.environ, TF_CONFIG=json.dumps(tf_config))
        procs.append(
            subprocess.Popen(
                _command(tmp_path, "trainer.strategy=multi_worker"),
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=500) for p in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    # The non-chief worker never opens a tracking store of its own.
    assert stray_before or not stray_store.exists()
    # Only the chief (worker 0) logs: one run, two replicas in sync.
    client, run = _only_run(tmp_path)
    assert run.info.status == "FINISHED"
    # MultiWorkerMirroredStrategy is CollectiveAllReduceStrategy in TF.
    assert run.data.tags["strategy"] == "CollectiveAllReduceStrategy"
    assert run.data.tags["num_replicas_in_sync"] == "2"
    val = _history(client, run, "val/loss")
    assert [s for s, _ in val] == [20]
    _check_logged_val_metrics(client, run, tmp_path)
