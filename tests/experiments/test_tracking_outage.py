"""A tracking server that goes away:
`experiments.engine.metric_log.MetricBuffer`
keeps metrics in memory without stalling, says so in one line, sends each
step once when the server is back, and spills what is left at the end to a
file that the resume path sends."""

import http.server
import json
import logging
import socket
import threading
import time

import mlflow
import pytest
import requests
from mlflow.tracking import MlflowClient

from convnet_repro.experiments.engine import metric_log
from convnet_repro.experiments.engine import outage
from convnet_repro.experiments.engine import train as train_lib
from convnet_repro.experiments.engine.compose import compose
from convnet_repro.experiments.engine.compose import fresh_sqlite_store
from tests.experiments.training import AtStep

LOGGER = "convnet_repro.experiments.engine.metric_log"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeTrackingServer:
    """An MLflow REST server for `log-batch` and `/health` that can stop and
    start again on the same port; records every metric it receives."""

    def __init__(self, port):
        self.port = port
        self.received = []  # (key, step, value, timestamp)
        self._httpd = None

    @property
    def uri(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        received = self.received

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, body):
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._reply("OK")

            def do_POST(self):
                length = int(self.headers["Content-Length"])
                body = json.loads(self.rfile.read(length))
                assert self.path.endswith("/runs/log-batch"), self.path
                for m in body.get("metrics", []):
                    received.append(
                        (m["key"], int(m["step"]), m["value"], m["timestamp"])
                    )
                self._reply("{}")

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self._httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", self.port), Handler
        )
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def stop(self):
        self._httpd.shutdown()
        self._httpd.server_close()

    def steps(self, key):
        return sorted(s for k, s, _, _ in self.received if k == key)


@pytest.fixture
def http_settings(monkeypatch):
    """Short MLflow HTTP timeout/retries, restored after the test."""
    monkeypatch.setenv(outage.TIMEOUT_ENV, "2")
    monkeypatch.setenv(outage.RETRIES_ENV, "1")
    yield
    metric_log._active = None


def test_http_settings_come_from_the_config(monkeypatch):
    tracking_cfg = compose(["experiment=smoke"]).tracking
    assert (tracking_cfg.request_timeout_s, tracking_cfg.max_retries) == (10, 1)
    monkeypatch.setenv(outage.TIMEOUT_ENV, "120")
    monkeypatch.delenv(outage.RETRIES_ENV, raising=False)
    outage.apply_http_settings({"request_timeout_s": 7, "max_retries": 0})
    assert mlflow.environment_variables.MLFLOW_HTTP_REQUEST_TIMEOUT.get() == 7
    env = mlflow.environment_variables.MLFLOW_HTTP_REQUEST_MAX_RETRIES
    assert env.get() == 0
    # null keeps what the environment says.
    outage.apply_http_settings({"request_timeout_s": None, "max_retries": None})
    assert mlflow.environment_variables.MLFLOW_HTTP_REQUEST_TIMEOUT.get() == 7


def test_dead_server_does_not_stall_and_spills_at_the_end(
    tmp_path, http_settings, caplog
):
    mlflow.set_tracking_uri(f"http://127.0.0.1:{_free_port()}")  # nobody
    spill = tmp_path / "ckpt" / metric_log.SPILL_FILE
    buffer = metric_log.MetricBuffer(
        "run0", spill_path=spill, retry_every_s=60, final_wait_s=0
    )
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for step in range(1, 31):
            buffer.log({"loss": 1.0 / step, "acc": step / 30}, step)
            buffer.flush()
    assert time.monotonic() - start < 10  # MLflow default: minutes
    assert buffer.offline
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1  # one line, not one per flush
    assert "unreachable at step 1" in warnings[0]
    assert "\n" not in warnings[0]

    assert buffer.close() is False
    rows = [json.loads(x) for x in spill.read_text().splitlines()]
    assert len(rows) == 60
    assert {r["run_id"] for r in rows} == {"run0"}
    assert "rerun the same command" in caplog.records[-1].getMessage()


def test_server_back_gets_every_step_once(tmp_path, http_settings, caplog):
    server = FakeTrackingServer(_free_port())
    server.start()
    mlflow.set_tracking_uri(server.uri)
    buffer = metric_log.MetricBuffer("run0", retry_every_s=0.2)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for step in range(1, 11):
            buffer.log({"loss": float(step)}, step)
            assert buffer.flush()
        server.stop()
        for step in range(11, 21):
            buffer.log({"loss": float(step)}, step)
            assert not buffer.flush()
        assert server.steps("loss") == list(range(1, 11))
        server.start()  # same port
        time.sleep(0.3)
        for step in range(21, 26):
            buffer.log({"loss": float(step)}, step)
            buffer.flush()
        assert buffer.close()
    server.stop()
    assert server.steps("loss") == list(range(1, 26))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "unreachable" in messages[0]
    assert "is back: sending" in messages[1] and "steps 11-" in messages[1]


def test_hung_server_stalls_at_most_the_timeout(http_settings, caplog):
    """A server that accepts connections but never answers (a hung host)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        mlflow.set_tracking_uri(f"http://127.0.0.1:{port}")
        buffer = metric_log.MetricBuffer("run0", retry_every_s=60)
        buffer.log({"loss": 1.0}, 1)
        start = time.monotonic()
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            assert not buffer.flush()
        first = time.monotonic() - start
        start = time.monotonic()
        for step in range(2, 50):
            buffer.log({"loss": 1.0}, step)
            buffer.flush()
        later = time.monotonic() - start
        start = time.monotonic()
        assert not buffer.flush(force=True)  # a retry: one health check
        retry = time.monotonic() - start
    # 2 attempts x 2 s timeout; then no waiting until the next retry, which
    # costs one timeout, not a retry cycle.
    assert 3.5 < first < 12
    assert later < 1
    assert 1.5 < retry < 3.5
    assert "unreachable" in caplog.records[0].getMessage()


def test_resume_sends_the_spill_file_first(tmp_path, http_settings):
    uri = f"sqlite:///{fresh_sqlite_store(tmp_path / 'm.db')}"
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.create_experiment("x")).info.run_id
    spill = tmp_path / metric_log.SPILL_FILE
    # The server dies: steps 5..20 end up in the spill file.
    mlflow.set_tracking_uri(f"http://127.0.0.1:{_free_port()}")
    dead = metric_log.MetricBuffer(run_id, spill_path=spill, final_wait_s=0)
    for step in (5, 10, 15, 20):
        dead.log({"loss": step / 10}, step)
    assert not dead.close()
    # The rerun (store reachable again) resumes the run.
    mlflow.set_tracking_uri(uri)
    again = metric_log.MetricBuffer(run_id, resume=True, spill_path=spill)
    assert not spill.exists()
    assert again.last_step == {"loss": 20}
    for step in (15, 20, 25):  # redone after the checkpoint at 10
        again.log({"loss": step / 10}, step)
    assert again.close()
    history = client.get_metric_history(run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [
        (5, 0.5),
        (10, 1.0),
        (15, 1.5),
        (20, 2.0),
        (25, 2.5),
    ]


def test_spill_file_of_another_run_is_left_alone(tmp_path, http_settings):
    spill = tmp_path / metric_log.SPILL_FILE
    spill.write_text(
        json.dumps({"run_id": "other", "metric": ["loss", 1.0, 0, 1]}) + "\n"
    )
    mlflow.set_tracking_uri(f"http://127.0.0.1:{_free_port()}")
    buffer = metric_log.MetricBuffer("mine", spill_path=spill)
    assert buffer.last_step == {}
    assert spill.exists()


def test_a_refusal_of_the_store_is_not_an_outage(tmp_path):
    uri = f"sqlite:///{fresh_sqlite_store(tmp_path / 'm.db')}"
    mlflow.set_tracking_uri(uri)
    buffer = metric_log.MetricBuffer("no-such-run")
    buffer.log({"loss": 1.0}, 1)
    with pytest.raises(mlflow.exceptions.MlflowException, match="no-such-run"):
        buffer.flush()


def test_log_metrics_goes_through_the_active_buffer(tmp_path):
    uri = f"sqlite:///{fresh_sqlite_store(tmp_path / 'm.db')}"
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.create_experiment("x")).info.run_id
    client.log_batch(
        run_id, metrics=[mlflow.entities.Metric("probe", 0.0, 0, 10)]
    )
    mlflow.set_tracking_uri(uri)
    buffer = metric_log.MetricBuffer(run_id, resume=True).activate()
    try:
        for step in (0, 5, 10, 15):  # a resumed callback re-logs 0..10
            metric_log.log_metrics({"probe": float(step)}, step)
        assert buffer.close()
    finally:
        metric_log._active = None
    steps = [m.step for m in client.get_metric_history(run_id, "probe")]
    assert sorted(steps) == [10, 15]


SERVER = {"down": False}


class CutServer(AtStep):
    """From `at_step` on, every write to the tracking store fails as if its
    server had died (see `_fail_when_down`)."""

    def fire(self, step):
        SERVER["down"] = True


def _fail_when_down(method):
    def wrapper(*args, **kwargs):
        if SERVER["down"]:
            raise requests.exceptions.ConnectionError("Connection refused")
        return method(*args, **kwargs)

    return wrapper


def test_server_gone_at_exit_leaves_a_file_that_the_rerun_sends(
    tmp_path, monkeypatch, caplog
):
    """The store's writes fail from step 30 to the end of the process: the
    run stays RUNNING with its metrics in the spill file; the same command
    rerun sends them (each step once), logs the model and ends FINISHED."""
    for name in ("log_batch", "set_terminated", "log_artifact", "set_tag"):
        method = getattr(MlflowClient, name)
        monkeypatch.setattr(MlflowClient, name, _fail_when_down(method))
    uri = f"sqlite:///{fresh_sqlite_store(tmp_path / 'mlruns.db')}"
    overrides = [
        "experiment=smoke",
        f"tracking.uri={uri}",
        f"tracking.artifact_location={tmp_path}/mlartifacts",
        f"paths.checkpoint_dir={tmp_path}/checkpoints",
        f"paths.output_dir={tmp_path}/outputs",
        "tracking.final_wait_s=0",
        "tracking.log_figures=false",
    ]
    cut = [
        "+callbacks.cut._target_=tests.experiments.test_tracking_outage."
        "CutServer",
        "+callbacks.cut.at_step=30",
    ]
    SERVER["down"] = False
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            first = train_lib.train(compose(overrides + cut))
    finally:
        SERVER["down"] = False
    assert first["status"] == "FINISHED" and first["tracking_pending"]
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(first["run_id"])
    assert run.info.status == "RUNNING"
    (spill,) = (tmp_path / "checkpoints").rglob(metric_log.SPILL_FILE)
    messages = [r.getMessage() for r in caplog.records]
    assert any(str(spill) in m and "rerun" in m for m in messages)
    logged = [m.step for m in client.get_metric_history(run.info.run_id, "lr")]
    assert sorted(logged) == [5, 10, 15, 20]  # flushed at step 20

    again = train_lib.train(compose(overrides))
    assert again["run_id"] == first["run_id"]
    assert "tracking_pending" not in again
    run = client.get_run(first["run_id"])
    assert run.info.status == "FINISHED"
    assert not spill.exists()
    for key, steps in (("lr", range(5, 41, 5)), ("val/loss", (20, 40))):
        logged = [
            m.step for m in client.get_metric_history(run.info.run_id, key)
        ]
        assert sorted(logged) == list(steps), key
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "model" in artifacts
