"""The closing summary that `python -m convnet_repro.experiments.train` prints.

Status per run, the report's table (as text) and output paths, the parent
run id and the command that opens it in the MLflow UI. `json_result` is the
one-line JSON printed before it for scripts.
"""

import math
import pathlib

from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from convnet_repro.experiments.engine import metric_keys as mk

_METRIC = mk.VAL_TOP1_ACCURACY
_MAX_TABLE_LINES = 40


def json_result(result):
    """The result without children and report output (JSON-safe)."""
    return {k: v for k, v in result.items() if k not in ("children", "report")}


def _fmt(value):
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.4f}"
    return "-"


def _run_lines(result):
    children = result.get("children") or {}
    rows = children.items() if children else [("(single run)", result)]
    width = max(len(name) for name, _ in rows)
    lines = []
    for name, r in rows:
        status = r.get("status", "?")
        if r.get("skipped"):
            status += " (finished before)"
        lines.append(
            f"  {name:<{width}}  {status:<10}  {_METRIC} "
            f"{_fmt(r.get(_METRIC))}  run {r.get('run_id')}"
        )
    return lines


def _report_paths(result, client):
    """Paths the report wrote, else the parent's `report/` artifacts."""
    report = result.get("report")
    if isinstance(report, dict) and report.get("written"):
        return [str(p) for p in report["written"]]
    run_id = result.get("run_id")
    if not run_id or client is None:
        return []
    try:
        uri = client.get_run(run_id).info.artifact_uri
        files = client.list_artifacts(run_id, "report")
    except Exception:  # the store is away: the summary still prints
        return []
    return [f"{uri}/{f.path}" for f in files if not f.is_dir]


def _table_text(paths):
    for path in paths:
        p = pathlib.Path(str(path).removeprefix("file://"))
        if p.name == "table.md" and p.is_file():
            lines = p.read_text().rstrip().splitlines()
            if len(lines) > _MAX_TABLE_LINES:
                lines = lines[:_MAX_TABLE_LINES] + [f"  ... (see {p})"]
            return [f"Table ({p}):", *lines]
    return []


def ui_command(tracking_uri, root_dir):
    """The command that serves `tracking_uri` in the MLflow UI."""
    default = f"sqlite:///{root_dir}/mlruns.db"
    if str(tracking_uri) == default:
        return "make ui", "http://127.0.0.1:5000"
    if str(tracking_uri).startswith(("http://", "https://")):
        return None, str(tracking_uri).rstrip("/")
    return (
        f"mlflow ui --backend-store-uri {tracking_uri}",
        "http://127.0.0.1:5000",
    )


def format_summary(cfg, result, client=None):
    """The summary text (several lines) of a finished `train` call.

    Args:
        cfg: the experiment's root config.
        result: what `experiments.engine.train.train` returned.
        client: an `MlflowClient` (default: one on the current tracking URI).

    Returns:
        A str without a trailing newline.
    """
    if client is None:
        client = MlflowClient()
    run_id = result.get("run_id")
    n = len(result.get("children") or {}) or 1
    lines = [
        "",
        f"=== {cfg.experiment_name}: {result.get('status')} "
        f"({n} run{'s' if n > 1 else ''}) ===",
        *_run_lines(result),
    ]
    paths = _report_paths(result, client)
    table = _table_text(paths)
    if table:
        lines += ["", *table]
    if paths:
        lines += ["", "Report outputs:", *(f"  {p}" for p in paths)]
    if run_id:
        try:
            experiment_id = client.get_run(run_id).info.experiment_id
        except Exception:  # the store is away
            experiment_id = None
        uri = OmegaConf.select(cfg, "tracking.uri")
        root = OmegaConf.select(cfg, "paths.root_dir")
        command, url = ui_command(uri, root)
        lines += [
            "",
            f"{'Parent run' if n > 1 else 'Run'}: {run_id}",
            "Open it in the MLflow UI:"
            + (f" {command}, then" if command else ""),
            f"  {url}/#/experiments/{experiment_id}/runs/{run_id}",
        ]
    return "\n".join(lines)
