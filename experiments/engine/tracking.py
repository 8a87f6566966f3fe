"""Connect to the MLflow store and record what identifies a run.

- `configure(tracking_cfg, experiment_name)`: tracking URI + experiment, after
  checking that a remote server answers (one-line `TrackingUnavailableError`
  naming the URI and the fix otherwise, before any training).
- `log_config(cfg)`: flattened resolved config as params, overrides and the
  `.hydra/` folder as artifacts, reproducibility tags.
- `run_key(cfg)` / `find_run(...)`: the deterministic key (a config hash) that
  lets a restarted command resume the same MLflow run.
- metric logging (every step once, outages survived) is in
  `experiments.engine.metric_log`; `configure` applies the HTTP timeout
  settings of `experiments.engine.outage`; reading runs back is
  `experiments.engine.run_queries`.

Default store: an embedded SQLite file `sqlite:///<repo>/mlruns.db` with
artifacts in `<repo>/mlartifacts`; `make ui` shows both, no server needed.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import pathlib
import platform
import subprocess
import urllib.error
import urllib.parse
import urllib.request

import mlflow
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig
from omegaconf import OmegaConf

from convnet_repro.experiments.engine import outage
from convnet_repro.experiments.engine.run_queries import PARENT_TAG

RUN_KEY_TAG = "repro.run_key"
_NAMESPACE = "convnet_repro"
# Config sections that do not change the numbers a run produces.
_NOT_IN_RUN_KEY = (
    "tracking",
    "paths",
    "callbacks",
    "report",
    "tags",
    "run_name",
    "paper",
    "optimized_metric",
    "extras",
)
_NOT_IN_RUN_KEY_TRAINER = ("progress", "log_every_steps", "keep_checkpoints")
# Callbacks that change what a run trains (the rest only observe it), and
# their keys that say where files go rather than what is trained.
_CALLBACKS_IN_RUN_KEY = ("early_stopping",)
_CALLBACK_KEYS_NOT_IN_RUN_KEY = ("directory",)


class TrackingUnavailableError(RuntimeError):
    """The tracking server cannot be reached."""


def _get(cfg, key, default=None):
    if isinstance(cfg, DictConfig):
        return OmegaConf.select(cfg, key, default=default)
    return cfg.get(key, default) if cfg else default


def check_reachable(uri, timeout_s=5.0):
    """Raises `TrackingUnavailableError` if an http(s) server does not answer.

    Local stores (`sqlite:`, `file:`, paths) need no server and pass.

    Args:
        uri: the MLflow tracking URI.
        timeout_s: seconds to wait.
    """
    scheme = urllib.parse.urlparse(str(uri)).scheme
    if scheme not in ("http", "https"):
        return
    url = str(uri).rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            if response.status == 200:
                return
            reason = f"HTTP {response.status}"
    except urllib.error.HTTPError as e:
        reason = f"HTTP {e.code}"
    except (OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
    raise TrackingUnavailableError(
        f"MLflow tracking server {uri} is unreachable ({reason}); start it "
        f"(mlflow server --host ...) or set tracking.uri to a local store, "
        f"e.g. tracking.uri=sqlite:///mlruns.db. Received: tracking.uri={uri}"
    )


def configure(tracking_cfg, experiment_name):
    """Sets the tracking URI and the active experiment.

    For an SQLite store, the first use (which creates and migrates the
    database) and the experiment creation run under an exclusive `flock` on
    `<db>.lock`: runs started at once on a fresh store (`-m`, parallel
    jobs) would otherwise race in MLflow's schema migration. MLflow has no
    such guard of its own (its `create_sqlalchemy_engine_with_retry` only
    retries connecting).

    Args:
        tracking_cfg: the `tracking` config (`uri`, `artifact_location`,
            `connect_timeout_s`, `request_timeout_s`, `max_retries`).
        experiment_name: MLflow experiment name (created if missing, with
            `artifact_location` for local stores).

    Returns:
        The experiment id.

    Raises:
        TrackingUnavailableError: a remote server does not answer.
        InfrastructureError: the local artifact folder is not writable.
    """
    uri = str(_get(tracking_cfg, "uri"))
    outage.apply_http_settings(_as_dict(tracking_cfg))
    check_reachable(uri, float(_get(tracking_cfg, "connect_timeout_s", 5.0)))
    lock = None
    if uri.startswith("sqlite:///"):
        db = pathlib.Path(uri[len("sqlite:///") :])
        db.parent.mkdir(parents=True, exist_ok=True)
        lock = db.with_name(db.name + ".lock")
    mlflow.set_tracking_uri(uri)
    with _file_lock(lock):
        experiment_id = _get_or_create_experiment(
            uri, experiment_name, _get(tracking_cfg, "artifact_location")
        )
    mlflow.set_experiment(experiment_id=experiment_id)
    _check_artifact_folder(MlflowClient().get_experiment(experiment_id))
    return experiment_id


@contextlib.contextmanager
def _file_lock(path):
    """Exclusive, blocking `flock` on `path` (no-op for None)."""
    if path is None:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _get_or_create_experiment(uri, experiment_name, location):
    client = MlflowClient()  # first store use: creates/migrates the DB
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is not None:
        return experiment.experiment_id
    remote = urllib.parse.urlparse(uri).scheme in ("http", "https")
    if location and not remote:
        path = pathlib.Path(location).expanduser().resolve()
        _check_writable(path, experiment_name, location)
        location = path.as_uri()
    else:
        location = None
    try:
        return client.create_experiment(
            experiment_name, artifact_location=location
        )
    except mlflow.exceptions.MlflowException:
        # Created concurrently by another process (remote server, workers).
        return client.get_experiment_by_name(experiment_name).experiment_id


def _check_artifact_folder(experiment):
    """Raises `InfrastructureError` if a local artifact folder is read-only.

    Found before any run exists (otherwise only when the model is logged,
    after training).
    """
    parsed = urllib.parse.urlparse(experiment.artifact_location)
    if parsed.scheme not in ("", "file"):
        return  # remote artifact stores are the server's business
    folder = pathlib.Path(urllib.parse.unquote(parsed.path))
    _check_writable(folder, experiment.name, experiment.artifact_location)


def _check_writable(folder, experiment_name, location):
    from convnet_repro.experiments.engine.checkpoints import ensure_writable_dir
    from convnet_repro.experiments.engine.exit_codes import InfrastructureError

    try:
        ensure_writable_dir(folder)
    except OSError as e:
        raise InfrastructureError(
            f"MLflow artifact folder {folder} of experiment "
            f"{experiment_name!r} is not writable ({e.strerror or e}); fix "
            "its permissions or use another experiment_name / "
            f"tracking.artifact_location. Received: artifact_location="
            f"{location!r}"
        ) from e


def configure_cli(tracking_cfg, experiment_name, uri=None):
    """`configure` for command-line tools: `uri` (if given) wins.

    Reports and evaluation accept `--tracking-uri`; without it they use the
    store of the experiment's config.
    """
    if uri:
        tracking_cfg = {**_as_dict(tracking_cfg), "uri": uri}
    return configure(tracking_cfg, experiment_name)


def _as_dict(tracking_cfg):
    if isinstance(tracking_cfg, DictConfig):
        return OmegaConf.to_container(tracking_cfg, resolve=True)
    return dict(tracking_cfg or {})


def flatten(container, prefix=""):
    """`{"a": {"b": 1}}` -> `{"a.b": 1}` (lists are kept as values)."""
    flat = {}
    for key, value in container.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def resolved_container(cfg):
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def run_key(cfg, extra=""):
    """A deterministic key of everything that changes a run's numbers.

    Args:
        cfg: the resolved config of the run.
        extra: a string mixed into the key (e.g. the child name).

    Returns:
        A 16-hex-digit key (or `tracking.run_key` when set).
    """
    explicit = _get(cfg, "tracking.run_key")
    if explicit:
        return f"{explicit}{'-' + extra if extra else ''}"
    container = resolved_container(cfg)
    training = {
        name: {
            k: v
            for k, v in (spec or {}).items()
            if k not in _CALLBACK_KEYS_NOT_IN_RUN_KEY
        }
        for name, spec in (container.get("callbacks") or {}).items()
        if name in _CALLBACKS_IN_RUN_KEY
    }
    for key in _NOT_IN_RUN_KEY:
        container.pop(key, None)
    if training:  # keys of runs without such callbacks are unchanged
        container["callbacks"] = training
    for key in _NOT_IN_RUN_KEY_TRAINER:
        container.get("trainer", {}).pop(key, None)
    if not (container.get("finetune") or {}).get("source"):
        container.pop("finetune", None)  # keys of runs from scratch unchanged
    text = json.dumps(container, sort_keys=True, default=str) + extra
    # Module paths are hashed without the distribution namespace, so runs
    # recorded before the `convnet_repro.` rename keep their keys (resume).
    text = text.replace(f"{_NAMESPACE}.", "")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def find_run(experiment_id, key, parent_run_id=None):
    """The newest run of `experiment_id` tagged `RUN_KEY_TAG=key`, or None."""
    query = f"tags.`{RUN_KEY_TAG}` = '{key}'"
    if parent_run_id:
        query += f" and tags.`{PARENT_TAG}` = '{parent_run_id}'"
    runs = MlflowClient().search_runs(
        [experiment_id],
        filter_string=query,
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def _git(*args):
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=pathlib.Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def device_description():
    """`"GPU: <name> x<n>"` or `"CPU: <model> (<n> cores, <isa>)"`.

    The CPU's model and widest vector ISA (`cpu_description`) are kept
    because float results of CPU kernels can depend on them (oneDNN picks
    its kernels by ISA), so two runs of the same code and seed are
    compared knowing whether the machines matched.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU: {details.get('device_name', 'unknown')} x{len(gpus)}"
    return f"CPU: {cpu_description()}"


def cpu_description(cpuinfo="/proc/cpuinfo"):
    """`"<model> (<n> cores, <isa>)"`, from `cpuinfo` where it exists.

    `<isa>` is the widest of avx512f / avx2 / sse4_2 in the flags (absent
    when unknown); elsewhere the model is `platform.processor()`.
    """
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    isa = next((i for i in ("avx512f", "avx2", "sse4_2") if i in flags), None)
    return f"{model} ({os.cpu_count()} cores{f', {isa}' if isa else ''})"


def reproducibility_tags(cfg=None):
    """Tags: git commit + dirty flag, TF/Keras versions, device, paper."""
    import keras
    import tensorflow as tf

    tags = {
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "python_version": platform.python_version(),
        "device": device_description(),
    }
    commit = _git("rev-parse", "HEAD")
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git_commit"] = commit
        status = _git("status", "--porcelain", "--untracked-files=no")
        tags["git_dirty"] = str(bool(status))
    paper = _get(cfg, "paper") if cfg is not None else None
    if paper:
        container = (
            OmegaConf.to_container(paper, resolve=True)
            if isinstance(paper, DictConfig)
            else dict(paper)
        )
        for key, value in flatten(container).items():
            tags[f"paper.{key}"] = str(value)[:5000]
    for tag in _get(cfg, "tags", None) or []:
        tags[f"tag.{tag}"] = "true"
    if cfg is not None:
        from convnet_repro.experiments.engine import (
            finetune,  # the source run, linked in the UI
        )

        tags.update(finetune.tags(cfg))
    return tags


def _hydra_output_dir():
    try:
        from hydra.core.hydra_config import HydraConfig

        return pathlib.Path(HydraConfig.get().runtime.output_dir)
    except (ImportError, ValueError):
        return None


def log_config(cfg, log_params=True):
    """Logs `cfg` to the active run: params, tags and Hydra artifacts.

    Args:
        cfg: the resolved config of the run.
        log_params: False on a resumed run (params are immutable in MLflow
            and already there).
    """
    client = MlflowClient()
    run_id = mlflow.active_run().info.run_id
    if log_params:
        params = flatten(resolved_container(cfg))
        # MLflow caps values at 6000 characters.
        params = {k: str(v)[:6000] for k, v in params.items()}
        mlflow.log_params(params)
    tags = reproducibility_tags(cfg)
    client.log_batch(
        run_id,
        tags=[mlflow.entities.RunTag(k, v) for k, v in tags.items()],
    )
    out = _hydra_output_dir()
    if out is not None and (out / ".hydra").is_dir():
        mlflow.log_artifacts(str(out / ".hydra"), artifact_path="hydra")
        overrides = out / ".hydra" / "overrides.yaml"
        if overrides.exists():
            mlflow.log_artifact(str(overrides))
    else:
        mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
