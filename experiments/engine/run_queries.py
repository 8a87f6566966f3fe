"""Read an experiment's runs back from MLflow: children, descendants, means.

Used by the engine (a parent's `mean/*` over its children) and by the
reports and the evaluation hook (the runs of a finished experiment).
"""

from convnet_repro.experiments.engine import metric_keys as mk

PARENT_TAG = "mlflow.parentRunId"


def child_summary(client, run_ids, prefix=mk.VAL_PREFIX):
    """Means of the children's final `prefix*` metrics, as MLflow holds them.

    Read back from the store rather than taken from this process's results,
    so a parent whose children were resumed or skipped as finished gets the
    same summary as one that trained them all. Only keys that every child
    has are averaged (never a mean over a subset of children).

    Args:
        client: an `MlflowClient`.
        run_ids: the child runs to average.
        prefix: which metrics to average (the final eval metrics).

    Returns:
        `{key: mean}`, keys sorted.
    """
    finals = []
    for run_id in run_ids:
        metrics = client.get_run(run_id).data.metrics
        finals.append(
            {k: v for k, v in metrics.items() if k[: len(prefix)] == prefix}
        )
    if not finals:
        return {}
    keys = set.intersection(*(set(m) for m in finals))
    return {k: sum(m[k] for m in finals) / len(finals) for k in sorted(keys)}


def _search_children(client, experiment_id, parent_run_id, max_results):
    return client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
        order_by=["attributes.start_time ASC"],
        max_results=max_results,
    )


def child_runs(client, parent_run_id, max_results=1000):
    """The direct child runs of `parent_run_id`, oldest first."""
    parent = client.get_run(parent_run_id)
    return _search_children(
        client, parent.info.experiment_id, parent_run_id, max_results
    )


def descendant_runs(client, parent_run_id, max_results=5000):
    """Every run below `parent_run_id` (children, grandchildren, ...)."""
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    found, frontier = [], [parent_run_id]
    while frontier:
        batch = []
        for run_id in frontier:
            batch += _search_children(
                client, experiment_id, run_id, max_results
            )
        found += batch
        frontier = [r.info.run_id for r in batch]
    return found
