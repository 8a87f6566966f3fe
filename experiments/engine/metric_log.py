"""Resume-safe metric logging that outlives an unreachable tracking server.

Every metric of a training run, the engine's and the callbacks' (through
`log_metrics`), goes through the run's one `MetricBuffer`:

- a step that the run already holds for a key is dropped, so a resumed run
  has every step exactly once;
- values go out in few `log_batch` calls. When the server cannot be reached
  they stay in memory (one warning line) and training goes on. The buffer
  tries again after `retry_every_s` seconds, doubling the wait up to 8x
  while the server stays away (a try against a server that accepts
  connections but does not answer blocks for one health check, <= 2 s, plus
  one request timeout), and sends them in order when the server answers
  (one line). A value re-sent after a timed-out request that had in fact
  arrived is not duplicated: it keeps its original timestamp, and MLflow's
  SQL stores ignore an identical (key, step, timestamp, value) row;
- `close()` at the end of the run retries for `final_wait_s`; if the server
  is still away, the values go to a JSON-lines file (`spill_path`, in the
  run's checkpoint folder) that the next `MetricBuffer` of the same run (the
  resume path) sends first. `end_run` then leaves the run RUNNING, so the
  rerun of the same command resumes it and sets its final status.

MLflow's async logging (`mlflow.log_metrics(..., synchronous=False)`) was
considered and does not fit: it only moves each call to a worker thread. A
batch that fails after its retries is dropped with an error log (the
`AsyncLoggingQueue` never re-queues it), nothing is kept across processes,
and `end_run` still waits for every queued batch to run its full retry
cycle. It also cannot drop steps the run already holds.
"""

import json
import logging
import os
import pathlib
import time

import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from convnet_repro.experiments.engine.outage import RETRIES_ENV
from convnet_repro.experiments.engine.outage import TIMEOUT_ENV
from convnet_repro.experiments.engine.outage import reason
from convnet_repro.experiments.engine.outage import unreachable

log = logging.getLogger(__name__)

# Tags that describe a failure; cleared when the run later finishes.
FAILURE_TAGS = ("failure_reason", "failed_children")
# Unsent metrics of a run, in its checkpoint folder.
SPILL_FILE = "unsent_metrics.jsonl"

_MAX_BACKOFF = 8  # longest wait between tries, in `retry_every_s`

_active = None  # the MetricBuffer of the run being trained


class MetricBuffer:
    """Queues a run's metrics, sends them in batches, survives outages.

    Args:
        run_id: MLflow run id.
        resume: read the last logged step of every metric of the run (after
            sending what `spill_path` holds for this run).
        max_buffer: try to send when this many values are waiting.
        spill_path: JSON-lines file for values still unsent at `close()`;
            read (and sent) here when it holds values of `run_id`.
        retry_every_s: seconds between tries while the server is away.
        final_wait_s: how long `close()` keeps trying before it spills.
    """

    def __init__(
        self,
        run_id,
        resume=False,
        max_buffer=900,
        spill_path=None,
        retry_every_s=30.0,
        final_wait_s=60.0,
    ):
        self.run_id = run_id
        self.client = MlflowClient()
        self.uri = mlflow.get_tracking_uri()
        self.max_buffer = max_buffer
        self.spill_path = pathlib.Path(spill_path) if spill_path else None
        self.retry_every_s = float(retry_every_s)
        self.final_wait_s = float(final_wait_s)
        self.spilled = False
        self.closed = False
        self.last_step = {}
        self._buffer = []
        self._offline_since = None  # step of the first failed send
        self._next_try = 0.0
        self._failures = 0  # failed tries in a row
        self._load_spill()
        if self._buffer:
            self.flush(force=True)
        if resume:
            run = self.client.get_run(run_id)
            for key in run.data.metrics:
                history = self.client.get_metric_history(run_id, key)
                if history:
                    self.last_step[key] = max(m.step for m in history)
        for metric in self._buffer:  # spilled values not sent yet
            last = self.last_step.get(metric.key, -1)
            self.last_step[metric.key] = max(last, metric.step)

    @property
    def offline(self):
        """True while the server is known to be unreachable."""
        return self._offline_since is not None

    def activate(self):
        """Makes this buffer the target of `log_metrics` (callbacks)."""
        global _active
        _active = self
        return self

    def log(self, metrics, step):
        """Queues `{key: value}` at `step` (skipping already logged steps)."""
        now = int(time.time() * 1000)
        for key, value in metrics.items():
            if step <= self.last_step.get(key, -1):
                continue
            self._buffer.append(Metric(key, float(value), now, int(step)))
            self.last_step[key] = int(step)
        if len(self._buffer) >= self.max_buffer:
            self.flush()

    def flush(self, force=False):
        """Sends the queued values; never raises on an unreachable server.

        Without `force`, one request (<= 1000 values) per call: a backlog
        left by an outage goes out over the next calls instead of holding
        training up for all of its requests at once.

        Args:
            force: send everything now, even if the last failure is under
                `retry_every_s` seconds old.

        Returns:
            True when nothing is left to send.
        """
        if not self._buffer:
            return True
        if self.offline and not force and time.monotonic() < self._next_try:
            return False
        pending = len(self._buffer)
        # urllib3 logs each HTTP retry; the outage gets one line, below.
        urllib3_log = logging.getLogger("urllib3.connectionpool")
        level = urllib3_log.level
        urllib3_log.setLevel(logging.ERROR)
        retries = os.environ.get(RETRIES_ENV)
        if self.offline:  # a retry is one try: training waits <= 1 timeout
            os.environ[RETRIES_ENV] = "0"
        try:
            if self.offline:
                self._probe()
            while self._buffer:
                chunk = self._buffer[:1000]  # MLflow's batch limit
                self.client.log_batch(self.run_id, metrics=chunk)
                del self._buffer[: len(chunk)]
                if not force:
                    break
        except Exception as e:
            if not unreachable(e):
                raise
            if not self.offline:
                self._offline_since = self._buffer[0].step
                log.warning(
                    "MLflow server %s unreachable at step %d (%s); keeping "
                    "metrics locally and retrying every %g-%gs",
                    self.uri,
                    self._buffer[-1].step,
                    reason(e),
                    self.retry_every_s,
                    self.retry_every_s * _MAX_BACKOFF,
                )
            # Each try may block training for a timeout (a server that
            # accepts connections but does not answer yet): back off.
            self._failures += 1
            backoff = min(2 ** (self._failures - 1), _MAX_BACKOFF)
            self._next_try = time.monotonic() + self.retry_every_s * backoff
            return False
        finally:
            urllib3_log.setLevel(level)
            if retries is None:
                os.environ.pop(RETRIES_ENV, None)
            else:
                os.environ[RETRIES_ENV] = retries
        if self.offline:
            log.warning(
                "MLflow server %s is back: sending %d buffered metric values "
                "(steps %d-%d)",
                self.uri,
                pending,
                self._offline_since,
                max(self.last_step.values(), default=0),
            )
            self._offline_since = None
        self._failures = 0
        return not self._buffer

    def _probe(self):
        """One short request before a batch (no MLflow retry cycle)."""
        from convnet_repro.experiments.engine.tracking import (
            TrackingUnavailableError,
        )
        from convnet_repro.experiments.engine.tracking import check_reachable

        timeout = float(os.environ.get(TIMEOUT_ENV, 2))
        try:
            check_reachable(self.uri, timeout_s=min(timeout, 2.0))
        except TrackingUnavailableError as e:
            raise ConnectionError("health check failed") from e

    def close(self, wait=True):
        """Sends what is left, retrying up to `final_wait_s`; else spills.

        Args:
            wait: False sends once, without waiting for the server.

        Returns:
            True when every value reached the server (also when called
            again after that).
        """
        if self.closed:
            return not self.spilled
        self.closed = True
        deadline = time.monotonic() + (self.final_wait_s if wait else 0.0)
        while not self.flush(force=True):
            if time.monotonic() >= deadline:
                self._spill()
                return False
            time.sleep(min(self.retry_every_s, 5.0))
        return True

    def _spill(self):
        if self.spill_path is None:
            log.warning(
                "MLflow server %s unreachable: %d metric values of run %s "
                "are lost (no spill file)",
                self.uri,
                len(self._buffer),
                self.run_id,
            )
            return
        self.spill_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.spill_path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            for m in self._buffer:
                row = [m.key, m.value, m.timestamp, m.step]
                f.write(json.dumps({"run_id": self.run_id, "metric": row}))
                f.write("\n")
        os.replace(tmp, self.spill_path)
        self.spilled = True
        log.warning(
            "MLflow server %s still unreachable: %d metric values of run %s "
            "kept in %s; rerun the same command to send them and finish "
            "the run",
            self.uri,
            len(self._buffer),
            self.run_id,
            self.spill_path,
        )

    def _load_spill(self):
        if self.spill_path is None or not self.spill_path.exists():
            return
        rows = [
            json.loads(line)
            for line in self.spill_path.read_text().splitlines()
            if line.strip()
        ]
        mine = [r["metric"] for r in rows if r["run_id"] == self.run_id]
        if len(mine) < len(rows):
            log.warning(
                "%s holds metrics of another run; left as is",
                self.spill_path,
            )
            return
        self._buffer = [Metric(k, v, t, s) for k, v, t, s in mine]
        self.spill_path.unlink()
        self.spilled = False


def log_metrics(metrics, step):
    """Logs `{key: value}` at `step` through the active run's buffer.

    The one path for callback metrics: resume-safe (steps the run already
    holds are dropped) and kept while the server is away. Outside the
    engine (no active buffer) it falls back to `mlflow.log_metrics` when an
    MLflow run is active, and does nothing otherwise.
    """
    if _active is not None:
        _active.log(metrics, step)
    elif mlflow.active_run() is not None:
        mlflow.log_metrics(metrics, step=step)


def end_run(status, tags=None, wait=True):
    """Ends the active MLflow run with `status`, even if the server is gone.

    Sends the active buffer first (`MetricBuffer.close`). When values had
    to be spilled, the run is left RUNNING (the rerun of the same command
    resumes it). On `FINISHED`, stale `FAILURE_TAGS` are deleted. An
    unreachable server gives one warning line, never a traceback.

    Args:
        status: `"FINISHED"`, `"FAILED"` or `"KILLED"`.
        tags: tags to set before ending.
        wait: False does not wait `final_wait_s` for the server.

    Returns:
        True when the status was recorded on the server.
    """
    run = mlflow.active_run()
    if run is None:
        return False
    run_id = run.info.run_id
    global _active
    sent = True
    if _active is not None and _active.run_id == run_id:
        sent = _active.close(wait=wait)
        _active = None
    if not sent:
        _forget_active_run()
        return False
    try:
        client = MlflowClient()
        if tags:
            mlflow.set_tags(tags)
        if status == "FINISHED":
            clear_failure_tags(client, run_id)
        mlflow.end_run(status)
        return True
    except Exception as e:
        if not unreachable(e):
            raise
        log.warning(
            "MLflow server %s unreachable (%s): run %s stays RUNNING there; "
            "rerun the same command to finish it",
            mlflow.get_tracking_uri(),
            reason(e),
            run_id,
        )
        _forget_active_run()
        return False


def clear_failure_tags(client, run_id):
    """Deletes `FAILURE_TAGS` left on `run_id` by an earlier failure."""
    tags = client.get_run(run_id).data.tags
    for key in FAILURE_TAGS:
        if key in tags:
            client.delete_tag(run_id, key)


def _forget_active_run():
    """Pops the active run locally, leaving its server status alone."""
    try:
        # `end_run` pops the run before it calls the server; "RUNNING" keeps
        # the status should the server answer after all.
        mlflow.end_run("RUNNING")
    except Exception as e:
        if not unreachable(e):
            raise
