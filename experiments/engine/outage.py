"""Tell an unreachable tracking server from a refusal; bound MLflow's waits.

`apply_http_settings` turns `tracking.request_timeout_s` and
`tracking.max_retries` into MLflow's own `MLFLOW_HTTP_REQUEST_TIMEOUT` and
`MLFLOW_HTTP_REQUEST_MAX_RETRIES` (MLflow's defaults, 120 s and 7 retries
with exponential backoff, froze training for about 17 minutes on a dead
server). `unreachable` says whether an error is an outage (retry later) or
an answer of the server (a bug or a bad request: raise).
"""

import os

from mlflow.exceptions import MlflowException
from mlflow.exceptions import RestException

TIMEOUT_ENV = "MLFLOW_HTTP_REQUEST_TIMEOUT"
RETRIES_ENV = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
_TRANSIENT_CODES = ("INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE")


def apply_http_settings(tracking_cfg):
    """Sets MLflow's HTTP timeout and retry env vars from the config.

    A `null` key leaves the environment (or MLflow's default) alone.

    Args:
        tracking_cfg: mapping with `request_timeout_s` and `max_retries`.
    """
    settings = (
        (TIMEOUT_ENV, tracking_cfg.get("request_timeout_s"), 1),
        (RETRIES_ENV, tracking_cfg.get("max_retries"), 0),
    )
    for name, value, low in settings:
        if value is not None:
            os.environ[name] = str(max(int(value), low))  # MLflow wants int


def unreachable(error):
    """True if `error` means the store could not be reached (not a refusal).

    A `RestException` is an answer of the server (bad request, unknown run):
    retrying cannot help, so it is not an outage.
    """
    if isinstance(error, RestException):
        return False
    if isinstance(error, MlflowException):
        # MLflow wraps transport failures (refused, timed out, retries
        # exhausted) with the default code; a store's refusals carry theirs.
        return error.error_code in _TRANSIENT_CODES
    import requests

    return isinstance(error, (requests.RequestException, OSError))


def reason(error):
    """The first line of `error`, short enough for a one-line warning."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:160]
