"""Developer tool: a PNG of a run's chart view in the MLflow UI.

Starts `mlflow ui` on a tracking store, opens the run's "Model metrics"
page in headless Chromium (Debian: `apt-get install -y chromium`; not a
runtime dependency of the project) and saves a screenshot. By default the
run is the newest parent run (`repro.role=parent`) of the experiment, whose
`curve/val/*/<variant>` charts are the paper's figure.

Example (after `make bn-mnist-short`):

    python docs/screenshot_ui.py --experiment bn_mnist_short \\
        --out docs/mlflow_ui_bn_mnist_short.png
"""

import argparse
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _parent_run(client, experiment_name):
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        sys.exit(f"error: no experiment {experiment_name!r} in the store")
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string="tags.`repro.role` = 'parent'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        sys.exit(f"error: experiment {experiment_name!r} has no parent run")
    return experiment.experiment_id, runs[0].info.run_id


def _wait_for(url, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    sys.exit(f"error: {url} did not answer in {timeout_s} s")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default=f"sqlite:///{ROOT}/mlruns.db")
    parser.add_argument("--experiment", default="bn_mnist_short")
    parser.add_argument("--run-id", default=None, help="default: newest parent")
    parser.add_argument("--tab", default="model-metrics")
    parser.add_argument("--out", default=str(ROOT / "docs" / "mlflow_ui.png"))
    parser.add_argument("--port", type=int, default=5077)
    parser.add_argument("--size", default="1600,1500")
    parser.add_argument("--wait-ms", type=int, default=90000)
    args = parser.parse_args(argv)

    from mlflow.tracking import MlflowClient

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("error: no chromium; install it: apt-get install -y chromium")
    client = MlflowClient(args.tracking_uri)
    experiment_id, run_id = _parent_run(client, args.experiment)
    run_id = args.run_id or run_id
    base = f"http://127.0.0.1:{args.port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "ui",
            "--backend-store-uri",
            args.tracking_uri,
            "--port",
            str(args.port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its uvicorn workers go with it
    )
    try:
        _wait_for(f"{base}/health", 120)
        url = f"{base}/#/experiments/{experiment_id}/runs/{run_id}/{args.tab}"
        subprocess.run(
            [
                browser,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--window-size={args.size}",
                # Virtual time stands still while requests are pending, so
                # the charts' data is in when the budget is spent.
                f"--virtual-time-budget={args.wait_ms}",
                "--run-all-compositor-stages-before-draw",
                f"--screenshot={pathlib.Path(args.out).resolve()}",
                url,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=300,
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    print(f"{args.out}: {url}")


if __name__ == "__main__":
    main()
