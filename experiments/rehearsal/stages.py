"""The rehearsal's stages: config, kill, resume, evaluate, report row.

`rehearse(...)` runs one full-scale experiment with the overrides of
`conf/debug/rehearsal.yaml` (batch, steps, image counts) on an ILSVRC-2012
sample and returns one `Stage` (pass/fail, seconds, detail) per stage:

1. `config`: the model and data the engine instantiates match the config
   (resolution, parameter count, aux heads / towers, augmentation, batch
   shapes; `experiments.rehearsal.checks`).
2. `killed`: training stops at `kill_at_step`, after the step-2 checkpoint.
   `kill="subprocess"`: `python -m convnet_repro.experiments.train` with
   `experiments.engine.callbacks.FaultInjection` (`os._exit`, the run stays
   RUNNING); `kill="inprocess"`: `train(cfg)` with the `Interrupt` callback
   (KeyboardInterrupt, the run is marked KILLED) - the same resume path,
   without a second interpreter start.
3. `resumed`: the same command again finishes every run in the same MLflow
   run ids, with each metric step logged once and the paper's learning rate.
4. `evaluated`: the config's `report:` hook (run by the engine at the end)
   scored each `report.rows` entry with its protocol's number of views.
5. `report row`: the ImageNet table (`experiments.reports.imagenet_table`,
   scale `full`) holds the config's rows; for `bn_inception_full` its own
   report wrote its table.

Step times come from `callbacks.StepTimer` (median of the steps that are
not the first of a `fit` call).
"""

import dataclasses
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time
import traceback

from convnet_repro.experiments.rehearsal import checks

REPO = pathlib.Path(__file__).resolve().parents[2]
KILL_ENV = "REPRO_REHEARSAL_KILL"
KILL_EXIT_CODE = 3
LAYOUTS = ("folder", "tfds")
KILLS = ("subprocess", "inprocess")


@dataclasses.dataclass
class Stage:
    """One line of the rehearsal's output."""

    name: str
    ok: bool
    seconds: float
    detail: str = ""

    def line(self):
        mark = "PASS" if self.ok else "FAIL"
        return f"{mark} {self.name:<12} {self.seconds:7.1f} s  {self.detail}"


def data_overrides(layout, data_dir, tfds_data_dir=None):
    """Hydra overrides pointing `data` at a sample in `layout`.

    Args:
        layout: `folder` (`data_dir` holds `train/<wnid>/`, `val/<wnid>/`)
            or `tfds` (`data_dir` is the tfds `manual_dir` with the two
            ILSVRC-2012 tars; prepared into `tfds_data_dir` on first use).
        data_dir: see `layout`.
        tfds_data_dir: tfds `data_dir` (prepared once, reused).
    """
    if layout == "folder":
        return ["data.source=local", f"data.local_dir={data_dir}"]
    if layout == "tfds":
        if tfds_data_dir is None:
            raise ValueError(
                "The tfds layout needs a tfds data_dir to prepare into; pass "
                "--tfds-data-dir. Received: tfds_data_dir=None"
            )
        return [
            "data.source=tfds",
            f"data.manual_dir={data_dir}",
            f"data.tfds_data_dir={tfds_data_dir}",
            "data.download=true",
        ]
    raise ValueError(f"layout must be one of {LAYOUTS}. Received: {layout!r}")


def _store_overrides(workdir):
    return [
        f"tracking.uri=sqlite:///{workdir}/mlruns.db",
        f"tracking.artifact_location={workdir}/mlartifacts",
        f"paths.checkpoint_dir={workdir}/checkpoints",
        f"paths.results_dir={workdir}/results",
        f"paths.output_dir={workdir}/outputs",
    ]


def compose_rehearsal(experiment, overrides=()):
    """The experiment's config under `debug=rehearsal` (+ `overrides`).

    The `report:` hook of `experiments.evaluate` also gets the rehearsal's
    `extras.rehearsal.evaluate` arguments (image count, batch).
    """
    from convnet_repro.experiments.engine.compose import compose

    base = [f"experiment={experiment}", "debug=rehearsal", *overrides]
    cfg = compose(base)
    return cfg, base + _report_overrides(cfg)


def _report_overrides(cfg):
    report = cfg.get("report")
    if report is None or not str(report._target_).startswith(
        "convnet_repro.experiments.evaluat"
    ):
        return []
    extra = cfg.extras.rehearsal.evaluate
    return [f"++report.{k}={v}" for k, v in extra.items()]


def _callback_overrides(workdir, mode, at_step):
    out = [
        "+callbacks.rehearsal_timer._target_="
        "convnet_repro.experiments.rehearsal.callbacks.StepTimer",
        f"+callbacks.rehearsal_timer.path={workdir}/steps.jsonl",
    ]
    if mode == "subprocess":
        out += [
            "+callbacks.rehearsal_kill._target_="
            "convnet_repro.experiments.engine.callbacks.FaultInjection",
            f"+callbacks.rehearsal_kill.at_step={at_step}",
            f"+callbacks.rehearsal_kill.exit_code={KILL_EXIT_CODE}",
            f"+callbacks.rehearsal_kill.env_var={KILL_ENV}",
        ]
    else:
        out += [
            "+callbacks.rehearsal_kill._target_="
            "convnet_repro.experiments.rehearsal.callbacks.Interrupt",
            f"+callbacks.rehearsal_kill.at_step={at_step}",
            f"+callbacks.rehearsal_kill.flag={workdir}/interrupted",
        ]
    return out


def _train_subprocess(overrides, kill):
    env = dict(os.environ, **{KILL_ENV: "1" if kill else "0"})
    out = subprocess.run(
        [sys.executable, "-m", "convnet_repro.experiments.train", *overrides],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    return out.returncode, (out.stdout + out.stderr)[-3000:]


def _train_inprocess(overrides, kill):
    from convnet_repro.experiments.engine import train as train_lib
    from convnet_repro.experiments.engine.compose import compose

    try:
        result = train_lib.train(compose(overrides))
    except KeyboardInterrupt as e:
        return (KILL_EXIT_CODE if kill else 1), str(e)
    return (0 if result.get("status") == "FINISHED" else 1), str(
        {k: v for k, v in result.items() if k != "children"}
    )


def _runs(client, cfg):
    experiment = client.get_experiment_by_name(cfg.experiment_name)
    if experiment is None:
        return []
    return [
        r
        for r in client.search_runs([experiment.experiment_id])
        if r.data.tags.get("repro.role") != "parent"
    ]


def _evaluations(client, parent_id):
    runs = []
    for experiment in client.search_experiments():
        runs += client.search_runs(
            [experiment.experiment_id],
            filter_string="tags.kind = 'evaluation' and "
            f"tags.source_parent_run_id = '{parent_id}'",
        )
    return runs


def _parent_id(client, cfg):
    experiment = client.get_experiment_by_name(cfg.experiment_name)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("repro.role") == "parent"]
    return (parents or runs)[0].info.run_id


def step_times(workdir):
    """`{run: median seconds}` over non-first steps in `steps.jsonl`."""
    path = pathlib.Path(workdir) / "steps.jsonl"
    if not path.exists():
        return {}
    by_run = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if not row["first"]:
            by_run.setdefault(row["run"], []).append(row["seconds"])
    return {k: statistics.median(v) for k, v in by_run.items()}


def _stage(name, fn):
    start = time.perf_counter()
    try:
        ok, detail = fn()
    except Exception as e:  # a stage failing is a result, not a crash
        ok, detail = False, f"{type(e).__name__}: {e}"
        traceback.print_exc()
    return Stage(name, ok, time.perf_counter() - start, detail)


def rehearse(
    experiment,
    layout,
    data_dir,
    workdir,
    kill="subprocess",
    tfds_data_dir=None,
    overrides=(),
    report_row=True,
    store_dir=None,
):
    """Rehearses one experiment; returns its list of `Stage`.

    Args:
        experiment: a `conf/experiment` name, e.g. `imagenet_resnet50`.
        layout: `folder` or `tfds` (see `data_overrides`).
        data_dir: the sample's folder root or tfds `manual_dir`.
        workdir: fresh folder for the MLflow store, checkpoints, results.
        kill: `subprocess` (a real `os._exit` of `experiments.engine.train`) or
            `inprocess` (KeyboardInterrupt inside `train(cfg)`).
        tfds_data_dir: tfds `data_dir` for the `tfds` layout.
        overrides: extra Hydra overrides (after the rehearsal's).
        report_row: also rebuild the ImageNet table (stage 5).
        store_dir: MLflow store, checkpoints and results shared with other
            rehearsals (`experiments.rehearsal.chain`: a fine-tuning run
            needs its source's runs); default `workdir`, a fresh store.

    Returns:
        list of `Stage`; later stages are skipped after a failure.
    """
    from mlflow import MlflowClient

    from convnet_repro.experiments.engine.compose import fresh_sqlite_store

    if kill not in KILLS:
        raise ValueError(f"kill must be one of {KILLS}. Received: {kill!r}")
    workdir = pathlib.Path(workdir).resolve()
    store = pathlib.Path(store_dir or workdir).resolve()
    fresh_sqlite_store(store / "mlruns.db")
    extra = [
        *data_overrides(layout, data_dir, tfds_data_dir),
        *_store_overrides(store),
        *overrides,
    ]
    cfg, base = compose_rehearsal(experiment, extra)
    at_step = int(cfg.extras.rehearsal.kill_at_step)
    command = base + _callback_overrides(workdir, kill, at_step)
    train = _train_subprocess if kill == "subprocess" else _train_inprocess
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    stages, state = [], {}

    def config():
        import hydra

        model = hydra.utils.instantiate(cfg.model, _convert_="all")
        found = checks.check_model(cfg, model) + checks.check_data(cfg)
        bad = [f"{n}: {d}" for n, ok, d in found if not ok]
        return not bad, "; ".join(bad) or "; ".join(
            f"{n} {d}" for n, _, d in found
        )

    def killed():
        code, tail = train(command, kill=True)
        state["killed"] = [
            r.info.run_id
            for r in _runs(client, cfg)
            if r.info.status != "FINISHED"
        ]
        ok = code == KILL_EXIT_CODE and len(state["killed"]) == 1
        return ok, f"exit {code} at step {at_step}" + ("" if ok else tail)

    def resumed():
        code, tail = train(command, kill=False)
        ok, detail = checks.check_resumed(
            client, cfg, _runs(client, cfg), state["killed"]
        )
        return code == 0 and ok, detail + ("" if code == 0 else tail)

    def evaluated():
        if cfg.report is None or not _report_overrides(cfg):
            found = (
                pathlib.Path(cfg.paths.results_dir) / "bn_inception" / "full"
            )
            ok = cfg.report is not None and (found / "table.csv").exists()
            return ok, f"report {cfg.report._target_}: {found}/table.csv"
        found = checks.check_protocol(
            cfg, _evaluations(client, _parent_id(client, cfg))
        )
        bad = [f"{d}" for _, ok, d in found if not ok]
        return not bad, "; ".join(bad or [d for _, _, d in found])

    def cli():
        rows = (cfg.report or {}).get("rows") or [{"protocol": "center"}]
        protocol = rows[0]["protocol"]
        run = sorted(_runs(client, cfg), key=lambda r: r.info.start_time)[0]
        args = [
            sys.executable, "-m", "convnet_repro.experiments.evaluate",
            run.info.run_id,
            "--experiment", experiment, "--protocol", protocol,
            "--max-images", "1", "--batch-size", "1", "--scale", "full",
            "--tracking-uri", cfg.tracking.uri,
            "--experiment-name", "rehearsal_cli",
            "--row", f"{experiment} (CLI)",
        ]  # fmt: skip
        args += [f"--override={o}" for o in base[1:]]
        scales = (cfg.report or {}).get("scales")
        if protocol == "multi_crop" and scales:
            args += ["--scales", *map(str, scales)]
        out = subprocess.run(
            args, cwd=REPO, capture_output=True, text=True, env=os.environ
        )
        found = (
            client.search_runs(
                [client.get_experiment_by_name("rehearsal_cli").experiment_id],
                filter_string=f"tags.row = '{experiment} (CLI)'",
            )
            if out.returncode == 0
            else []
        )
        views = [int(r.data.params["num_views"]) for r in found]
        want = checks.num_views(protocol, scales)
        ok = out.returncode == 0 and views == [want]
        detail = f"{protocol}: {views} views (want {want})"
        return ok, detail + ("" if ok else (out.stdout + out.stderr)[-2000:])

    def row():
        from convnet_repro.experiments.reports import imagenet_table

        table = imagenet_table.report(
            scale="full", results_dir=store / "results" / "imagenet_table"
        )
        names = {r["row"] for r in table["rows"]}
        want = {r.row for r in cfg.report.rows}
        return want <= names, f"rows {sorted(want)} in table.md"

    plan = [
        ("config", config),
        ("killed", killed),
        ("resumed", resumed),
    ]
    if cfg.report is not None:  # a pre-training run has no paper number
        plan.append(("evaluated", evaluated))
    if kill == "subprocess":  # as a user would: the evaluate command
        plan.append(("evaluate CLI", cli))
    if report_row and _report_overrides(cfg):
        plan.append(("report row", row))
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(cfg.tracking.uri)
    try:
        for name, fn in plan:
            stages.append(_stage(name, fn))
            if not stages[-1].ok:
                break
    finally:
        mlflow.set_tracking_uri(previous)
    times = step_times(workdir)
    if times:
        values = sorted(times.values())
        stages.append(
            Stage(
                "step time",
                True,
                statistics.median(values),
                f"median over {len(values)} run(s) at batch "
                f"{cfg.data.batch_size}, {tuple(cfg.data.input_shape)}",
            )
        )
    return stages
