"""Evaluation runs in MLflow: one run per scored row, with its per-image
probabilities as artifacts.

Params: `sources`, `protocol`, `num_models`, `num_views`, `num_images` (+
extra). Metrics: `top1_error`, `top5_error` (percent). Tags: `kind=
evaluation`, `row`, `table`, `scale`, `family`, the paper's numbers.
Artifacts (when given): `predictions/probabilities.npy` (float16, `(N,
classes)`), `predictions/labels.npy` (int32, `(N,)`) and
`predictions/top_k_hits.npy` (int8, `(N, 2)`: the top-1/top-5 hits the
row's error counted) from a `store.PredictionWriter` folder, which
`stored_predictions` fetches to combine scored runs into ensembles and for
the paired tests.

Uses the client API, so it works while another run is active (inside the
engine's `report:` hook).
"""

from convnet_repro.experiments.evaluation import store

DEFAULT_EXPERIMENT = "imagenet_table"
PREDICTIONS_DIR = "predictions"


def _experiment_id(client, name):
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name)


def _identity(sources, protocol, row, tags, params):
    """The tags and params (strings, as MLflow stores them) that say what
    an evaluation run scored and how."""
    all_tags = {"kind": "evaluation", **(tags or {})}
    if row:
        all_tags["row"] = row
    all_params = {
        "sources": ",".join(map(str, sources))[:6000],
        "protocol": protocol,
        **(params or {}),
    }
    return (
        {k: str(v) for k, v in all_tags.items()},
        {k: str(v) for k, v in all_params.items()},
    )


def log_evaluation(
    result,
    sources,
    protocol,
    experiment_name=DEFAULT_EXPERIMENT,
    row=None,
    tags=None,
    params=None,
    predictions=None,
):
    """Logs one evaluation as a new MLflow run and returns its id.

    Args:
        result: dict with `top1_error`, `top5_error`, `num_models`,
            `num_views`, `num_images`.
        sources: the scored sources (run ids, URIs, paths).
        protocol: the test protocol.
        experiment_name: MLflow experiment of the evaluation run.
        row: table row name (tag `row`).
        tags: extra tags (`table`, `scale`, `family`, `paper_*`).
        params: extra params (`resize`, `scales`).
        predictions: optional `store.PredictionWriter` folder (per-image
            probabilities, labels and top-k hits), logged under
            `predictions/`.

    Returns:
        The evaluation run id.
    """
    import mlflow
    from mlflow.entities import Metric
    from mlflow.entities import Param

    client = mlflow.MlflowClient()
    all_tags, all_params = _identity(sources, protocol, row, tags, params)
    name = f"eval-{row or protocol}-{protocol}".replace("/", "-")[:200]
    run = client.create_run(
        _experiment_id(client, experiment_name),
        run_name=name,
        tags=all_tags,
    )
    run_id = run.info.run_id
    for key in ("num_models", "num_views", "num_images"):
        all_params[key] = str(result[key])
    now = int(run.info.start_time or 0)
    client.log_batch(
        run_id,
        metrics=[
            Metric(k, float(result[k]), now, 0)
            for k in ("top1_error", "top5_error")
        ],
        params=[Param(k, str(v)) for k, v in all_params.items()],
        tags=[],
    )
    if predictions is not None:
        for name in (store.PROBABILITIES, store.LABELS, store.HITS):
            client.log_artifact(
                run_id, f"{predictions}/{name}", PREDICTIONS_DIR
            )
    client.set_terminated(run_id, "FINISHED")
    return run_id


def find_evaluation(sources, protocol, experiment_name, row, tags, params):
    """A finished evaluation run logged with exactly these arguments.

    The `report:` hook asks before scoring a row, so that rerunning an
    experiment whose runs are all finished (they are skipped) does not
    score the same models again: the long tier reruns its command in every
    session. Matches `sources` (in order), `protocol`, `row` and every
    given tag and param, as `log_evaluation` would store them; a run logged
    before a param existed does not match.

    The pages of `MlflowClient.search_runs` (1,000 runs each) are read
    newest first until a match. `mlflow.search_runs` pages too, but reads
    every page before it returns.

    Args:
        sources, protocol, experiment_name, row, tags, params: as for
            `log_evaluation`.

    Returns:
        The newest matching `mlflow.entities.Run`, or None.
    """
    import mlflow

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    want_tags, want_params = _identity(sources, protocol, row, tags, params)
    query = dict(
        experiment_ids=[experiment.experiment_id],
        filter_string=(
            "attributes.status = 'FINISHED' and tags.kind = 'evaluation'"
        ),
        order_by=["attributes.start_time DESC"],
    )
    token = None
    while True:  # every page: a store may hold more than one page of runs
        runs = client.search_runs(**query, page_token=token)
        for run in runs:
            have_params, have_tags = run.data.params, run.data.tags
            if all(
                have_params.get(k) == v for k, v in want_params.items()
            ) and all(have_tags.get(k) == v for k, v in want_tags.items()):
                return run
        token = runs.token
        if not token:
            return None


def stored_predictions(run_id, dst_dir):
    """Downloads an evaluation run's per-image predictions.

    Args:
        run_id: an evaluation run logged with `predictions`.
        dst_dir: download folder.

    Returns:
        The local prediction folder (for `store.combine`).
    """
    import mlflow

    names = {
        a.path.rsplit("/", 1)[-1]
        for a in mlflow.MlflowClient().list_artifacts(run_id, PREDICTIONS_DIR)
    }
    if not {store.PROBABILITIES, store.LABELS} <= names:
        raise ValueError(
            "The run holds no stored predictions; score it with "
            "python -m convnet_repro.experiments.evaluate (which logs them) "
            "first. "
            f"Received: run_id={run_id!r}"
        )
    return mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=PREDICTIONS_DIR, dst_path=str(dst_dir)
    )
