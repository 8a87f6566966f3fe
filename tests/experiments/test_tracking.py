"""MLflow helpers: reachability check, run keys, exactly-once metric logging,
and a real `mlflow server` on 127.0.0.1 receiving a run over HTTP."""

import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

from experiments import metric_log
from experiments import tracking
from experiments.engine_fixtures import compose
from experiments.engine_fixtures import fresh_sqlite_store

REPO = pathlib.Path(__file__).resolve().parents[2]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_is_reported_in_one_line():
    uri = f"http://127.0.0.1:{_free_port()}"
    start = time.time()
    with pytest.raises(tracking.TrackingUnavailableError) as info:
        tracking.configure({"uri": uri, "connect_timeout_s": 2.0}, "x")
    assert time.time() - start < 10  # no MLflow retry storm
    message = str(info.value)
    assert "\n" not in message
    assert uri in message
    assert "tracking.uri=" in message  # names the fix


def test_local_stores_need_no_server(tmp_path):
    tracking.check_reachable(f"sqlite:///{tmp_path}/x.db")
    tracking.check_reachable(str(tmp_path))


def test_run_key_ignores_logging_settings_but_not_hyperparameters():
    base = compose(["experiment=smoke"])
    key = tracking.run_key(base)
    same = compose(
        [
            "experiment=smoke",
            "tracking.uri=sqlite:////elsewhere.db",
            "paths.checkpoint_dir=/elsewhere",
            "trainer.verbose=1",
            "+callbacks.x._target_=builtins.dict",
        ]
    )
    assert tracking.run_key(same) == key
    for override in ("optimizer.learning_rate=0.1", "seed=1", "data.noise=1"):
        other = compose(["experiment=smoke", override])
        assert tracking.run_key(other) != key, override
    assert tracking.run_key(base, extra="a") != key
    explicit = compose(["experiment=smoke", "tracking.run_key=mine"])
    assert tracking.run_key(explicit) == "mine"


def test_flatten():
    assert tracking.flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {
        "a.b": 1,
        "a.c.d": [1, 2],
        "e": {},
    }


def test_metric_buffer_logs_each_step_once_after_resume(tmp_path):
    uri = f"sqlite:///{fresh_sqlite_store(tmp_path / 'm.db')}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("buf")
    run_id = client.create_run(exp).info.run_id
    import mlflow

    mlflow.set_tracking_uri(uri)
    first = metric_log.MetricBuffer(run_id)
    for step in (5, 10, 15):
        first.log({"loss": step / 10, "acc": 1 - step / 100}, step)
    first.flush()
    # A resumed process redoes steps 10..20: only 20 is new.
    second = metric_log.MetricBuffer(run_id, resume=True)
    assert second.last_step == {"loss": 15, "acc": 15}
    for step in (10, 15, 20):
        second.log({"loss": step / 10}, step)
    second.flush()
    history = client.get_metric_history(run_id, "loss")
    assert sorted(m.step for m in history) == [5, 10, 15, 20]
    assert sorted(m.value for m in history) == [0.5, 1.0, 1.5, 2.0]


def test_reproducibility_tags():
    cfg = compose(
        ["experiment=smoke", "+paper.table=2", "+paper.top1_error=0.4"]
    )
    tags = tracking.reproducibility_tags(cfg)
    assert tags["paper.table"] == "2"
    assert tags["paper.top1_error"] == "0.4"
    assert tags["git_dirty"] in ("True", "False")
    assert len(tags["git_commit"]) == 40
    assert tags["device"].startswith(("CPU", "GPU"))
    assert tags["tag.smoke"] == "true"


@pytest.mark.slow
def test_real_mlflow_server_receives_a_run_over_http(tmp_path):
    port = _free_port()
    db = fresh_sqlite_store(tmp_path / "server.db")
    server = subprocess.Popen(
        [
            str(pathlib.Path(sys.executable).parent / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{db}",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(uri + "/health", timeout=2)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise
                time.sleep(1)
        env = dict(os.environ, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "experiments.train",
                "experiment=smoke",
                "trainer.steps=20",
                "tracking=remote",
                f"tracking.uri={uri}",
                f"paths.checkpoint_dir={tmp_path}/ckpt",
                f"paths.output_dir={tmp_path}/out",
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name("smoke")
        (run,) = client.search_runs([exp.experiment_id])
        assert run.info.status == "FINISHED"
        steps = [
            m.step for m in client.get_metric_history(run.info.run_id, "lr")
        ]
        assert sorted(steps) == [5, 10, 15, 20]
        assert run.data.params["trainer.steps"] == "20"
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"model", "hydra"} <= artifacts
        # The artifacts went through the server to its destination.
        assert list((tmp_path / "server-artifacts").rglob("model.keras"))
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
