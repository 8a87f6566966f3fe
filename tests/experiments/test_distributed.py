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

from experiments.engine_fixtures import fresh_sqlite_store

REPO = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _command(tmp, *overrides):
    return [
        sys.executable,
        "-m",
        "experiments.train",
        "experiment=smoke",
        "trainer.steps=20",
        "tracking.log_model=false",
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


def _single_device_run(tmp, *overrides):
    """`(client, run)` of the same smoke run on the default strategy."""
    tmp = tmp / "single"
    fresh_sqlite_store(tmp / "mlruns.db")
    out = subprocess.run(
        _command(tmp, *overrides),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return _only_run(tmp)


def _history(client, run, key):
    return sorted(
        (m.step, m.value)
        for m in client.get_metric_history(run.info.run_id, key)
    )


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
    # Each global batch of 16 is split over the two replicas and their
    # gradients are all-reduced: the same updates as on one device, so the
    # same losses up to float32 summation order.
    losses = _history(client, run, "train/loss")
    assert [s for s, _ in losses] == [5, 10, 15, 20]
    single = _single_device_run(tmp_path)
    expected = _history(*single, "train/loss")
    assert [s for s, _ in expected] == [5, 10, 15, 20]
    for (step, got), (_, want) in zip(losses, expected):
        assert got == pytest.approx(want, rel=1e-4), step
    ((step, got),) = _history(client, run, "val/loss")
    assert [(step, pytest.approx(got, rel=1e-4))] == _history(
        *single, "val/loss"
    )


def test_multi_worker_with_two_local_workers(tmp_path):
    fresh_sqlite_store(tmp_path / "mlruns.db")
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
    # Only the chief (worker 0) logs: one run, two replicas in sync.
    client, run = _only_run(tmp_path)
    assert run.info.status == "FINISHED"
    # MultiWorkerMirroredStrategy is CollectiveAllReduceStrategy in TF.
    assert run.data.tags["strategy"] == "CollectiveAllReduceStrategy"
    assert run.data.tags["num_replicas_in_sync"] == "2"
    # Each worker takes every other batch of 16 (DATA auto-shard): a step
    # sees the stream's next 32 examples, as one device with batch 32 does.
    val = _history(client, run, "val/loss")
    assert [s for s, _ in val] == [20]
    single = _single_device_run(tmp_path, "data.batch_size=32")
    (expected,) = _history(*single, "val/loss")
    assert val[0][1] == pytest.approx(expected[1], rel=1e-3)
