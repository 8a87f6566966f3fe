"""MLflow helpers: reachability check, run keys, exactly-once metric logging,
and a real `mlflow server` on 127.0.0.1 receiving a run over HTTP."""

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import keras
import pytest
from mlflow.tracking import MlflowClient

from convnet_repro.experiments.engine import metric_log
from convnet_repro.experiments.engine import tracking
from convnet_repro.experiments.engine.compose import compose
from convnet_repro.experiments.engine.compose import fresh_sqlite_store
from tests.experiments.runs import TRAIN
from tests.experiments.runs import run_module
from tests.experiments.training import global_step

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


def test_local_stores_need_no_server(tmp_path, monkeypatch):
    contacted = []

    def refuse(url, timeout):
        contacted.append(url)
        raise OSError("connection refused")

    monkeypatch.setattr(tracking.urllib.request, "urlopen", refuse)
    for uri in (f"sqlite:///{tmp_path}/x.db", f"file://{tmp_path}", tmp_path):
        assert tracking.check_reachable(uri) is None
    assert contacted == []  # no probe for a local store
    # The same refusal on an http store is reported, naming the fix.
    with pytest.raises(tracking.TrackingUnavailableError, match="refused"):
        tracking.check_reachable("http://127.0.0.1:1")
    assert contacted == ["http://127.0.0.1:1/health"]


def test_run_key_ignores_logging_settings_but_not_hyperparameters():
    base = compose(["experiment=smoke"])
    key = tracking.run_key(base)
    same = compose(
        [
            "experiment=smoke",
            "tracking.uri=sqlite:////elsewhere.db",
            "paths.checkpoint_dir=/elsewhere",
            "trainer.progress=none",
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


def test_run_key_sees_early_stopping_but_not_where_it_writes():
    """Early stopping changes what is trained; its folder does not."""
    keys = [
        tracking.run_key(compose(["experiment=imagenette_resnet18_long", *o]))
        for o in (
            [],
            ["paths.checkpoint_dir=/elsewhere"],
            ["callbacks.early_stopping.patience=2"],
        )
    ]
    assert keys[0] == keys[1] != keys[2]


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


def test_cpu_description_names_the_model_and_vector_isa(tmp_path):
    """CPU kernels' float results can depend on the ISA, so the device tag
    says which model and widest ISA a run trained on."""
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC 9454\n"
        "flags\t\t: fpu sse4_2 avx2 avx512f avx512bw\n"
        "processor\t: 1\nmodel name\t: AMD EPYC 9454\n"
    )
    cores = os.cpu_count()
    assert tracking.cpu_description(info) == (
        f"AMD EPYC 9454 ({cores} cores, avx512f)"
    )
    info.write_text("model name : Old CPU\nflags : fpu sse4_2\n")
    assert tracking.cpu_description(info) == f"Old CPU ({cores} cores, sse4_2)"
    missing = tracking.cpu_description(tmp_path / "none")
    assert missing.endswith(f"({cores} cores)")


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 over a SQLite store in `root`,
    which a test can kill (SIGKILL, as a crash) and start again on the
    same port and store."""

    def __init__(self, root):
        self.root = pathlib.Path(root)
        self.port = _free_port()
        self.db = fresh_sqlite_store(self.root / "server.db")
        self.artifacts = self.root / "server-artifacts"
        self.process = None

    @property
    def uri(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait=True):
        self.process = subprocess.Popen(
            [
                str(pathlib.Path(sys.executable).parent / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{self.db}",
                "--artifacts-destination",
                str(self.artifacts),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout_s=180):
        deadline = time.time() + timeout_s
        while True:
            try:
                urllib.request.urlopen(self.uri + "/health", timeout=2)
                return
            except OSError:
                if time.time() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.5)

    def kill(self, sig=signal.SIGKILL):
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)


@pytest.fixture
def mlflow_server(tmp_path):
    """A started `MlflowServer`, killed at the end of the test."""
    server = MlflowServer(tmp_path)
    server.start()
    yield server
    server.kill(signal.SIGTERM)


@pytest.mark.slow
def test_real_mlflow_server_receives_a_run_over_http(tmp_path, mlflow_server):
    uri = mlflow_server.uri
    overrides = ["experiment=smoke", "trainer.steps=20"]
    overrides += ["tracking=remote", f"tracking.uri={uri}"]
    overrides += [f"paths.checkpoint_dir={tmp_path}/ckpt"]
    overrides += [f"paths.output_dir={tmp_path}/out"]
    out = run_module(TRAIN, overrides, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("smoke")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "lr")]
    assert sorted(steps) == [5, 10, 15, 20]
    assert run.data.params["trainer.steps"] == "20"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model", "hydra"} <= artifacts
    # The artifacts went through the server to its destination.
    assert list(mlflow_server.artifacts.rglob("model.keras"))


class Throttle(keras.callbacks.Callback):
    """Sleeps `seconds` per execution and appends "step wall-time" lines to
    `path` (the test reads training progress and stalls from it)."""

    def __init__(self, seconds, path):
        super().__init__()
        self.seconds = seconds
        self.path = path

    def on_train_batch_end(self, batch, logs=None):
        time.sleep(self.seconds)
        step = global_step(self.model)
        with open(self.path, "a") as f:
            f.write(f"{step} {time.time()}\n")


def _progress(path):
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text().splitlines()]
    return [(int(r[0]), float(r[1])) for r in rows if len(r) == 2]


def _wait_for_step(path, step, process, timeout_s=300):
    deadline = time.time() + timeout_s
    while not _progress(path) or _progress(path)[-1][0] < step:
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline, f"training did not reach step {step}"
        time.sleep(0.2)


@pytest.mark.slow
def test_training_survives_a_killed_and_restarted_server(
    tmp_path, mlflow_server
):
    """Kill -9 the server at step 300 and start it again (it takes tens of
    seconds to boot): training goes on, every step arrives once, FINISHED."""
    progress = tmp_path / "progress.txt"
    steps, timeout_s, retries = 3000, 5, 1
    train = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "convnet_repro.experiments.train",
            "experiment=smoke",
            f"trainer.steps={steps}",
            "trainer.eval_every_steps=500",
            "trainer.checkpoint_every_steps=500",
            "tracking=remote",
            f"tracking.uri={mlflow_server.uri}",
            f"tracking.request_timeout_s={timeout_s}",
            f"tracking.max_retries={retries}",
            "tracking.retry_every_s=2",
            "tracking.final_wait_s=300",
            "+callbacks.throttle._target_="
            "tests.experiments.test_tracking.Throttle",
            "+callbacks.throttle.seconds=0.1",
            f"+callbacks.throttle.path={progress}",
            f"paths.checkpoint_dir={tmp_path}/ckpt",
            f"paths.output_dir={tmp_path}/out",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_step(progress, 300, train)
        mlflow_server.kill()
        killed_at = _progress(progress)[-1][0]
        mlflow_server.start(wait=False)  # boots while training goes on
        stdout, stderr = train.communicate(timeout=900)
    finally:
        if train.poll() is None:
            train.kill()
    assert train.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    lines = (stdout + stderr).splitlines()  # Hydra logs to stdout
    down = [x for x in lines if "unreachable at step" in x]
    back = [x for x in lines if "is back: sending" in x]
    assert len(down) == 1 and len(back) == 1, stdout[-3000:]

    # Training did not wait for the server.
    times = _progress(progress)
    gaps = [b[1] - a[1] for a, b in zip(times, times[1:])]
    worst = max(gaps)
    print(f"server killed at step {killed_at}; longest step gap {worst:.2f}s")
    # Bound: the first failed write (timeout x (retries + 1)); later tries
    # are one health check (<= 2 s) + one write without retries.
    assert worst < max(timeout_s * (retries + 1), 2 + timeout_s) + 3

    client = MlflowClient(tracking_uri=mlflow_server.uri)
    (run,) = client.search_runs(
        [client.get_experiment_by_name("smoke").experiment_id]
    )
    assert run.info.status == "FINISHED"
    assert "failure_reason" not in run.data.tags
    for key, every in (("train/loss", 5), ("lr", 5), ("val/loss", 500)):
        logged = sorted(
            m.step for m in client.get_metric_history(run.info.run_id, key)
        )
        assert logged == list(range(every, steps + 1, every)), key
