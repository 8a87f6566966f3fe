"""Rows of the ImageNet table: evaluation runs from MLflow, one kept per row.

Reads the evaluation runs that `experiments.evaluate` logged (tag
`kind=evaluation`, `table=imagenet`, `scale=mini|full`) and keeps the newest
run per table row (`build_table`), refusing a table that would mix training
lengths.
"""

import dataclasses

from convnet_repro.experiments.engine import metric_keys as mk

FAMILIES = ("AlexNet", "VGG", "GoogLeNet", "ResNet", "Conv kind")

TABLE_COLUMNS = (
    "family",
    "row",
    "protocol",
    "num_models",
    "num_views",
    "num_images",
    "top1_error",
    "top5_error",
    "paper_top1_error",
    "paper_top5_error",
    "run_id",
)

PROTOCOL_LABELS = {
    "center": "centre crop",
    "ten_crop": "10 crops",
    "multi_crop": "multi-crop",
}


@dataclasses.dataclass
class Row:
    """One table row: an evaluation run and the paper's numbers.

    Attributes:
        family: model family (`FAMILIES` order), e.g. `"ResNet"`.
        row: row label, e.g. `"ResNet-50"`.
        protocol: `center`, `ten_crop` or `multi_crop`.
        num_models: ensemble size (1 for a single model).
        num_views: views per image.
        num_images: evaluated validation images.
        top1_error, top5_error: ours, percent.
        paper_top1_error, paper_top5_error: the paper's, percent or None.
        sources: comma-separated source run ids.
        run_id: the evaluation run.
        order: position within the family.
        fraction: the fraction of its experiment's steps the models were
            trained for (tag `fraction`; None for runs from before the tag).
    """

    family: str
    row: str
    protocol: str
    num_models: int
    num_views: int
    num_images: int
    top1_error: float
    top5_error: float
    paper_top1_error: float | None = None
    paper_top5_error: float | None = None
    sources: str = ""
    run_id: str = ""
    order: float = 0.0
    start_time: int = 0
    fraction: float | None = None


def _float_or_none(value):
    if value in (None, "", "None", "null"):
        return None
    return float(value)


def row_from_run(run):
    """Builds a `Row` from an MLflow evaluation run."""
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    return Row(
        family=tags.get("family") or "",
        row=tags.get("row") or run.info.run_name,
        protocol=params.get("protocol", ""),
        num_models=int(params.get("num_models", 1)),
        num_views=int(params.get("num_views", 1)),
        num_images=int(params.get("num_images", 0)),
        top1_error=float(metrics[mk.TOP1_ERROR]),
        top5_error=float(metrics[mk.TOP5_ERROR]),
        paper_top1_error=_float_or_none(tags.get("paper_top1_error")),
        paper_top5_error=_float_or_none(tags.get("paper_top5_error")),
        sources=params.get("sources", ""),
        run_id=run.info.run_id,
        order=float(tags.get("order") or 0),
        start_time=int(run.info.start_time or 0),
        fraction=_float_or_none(tags.get("fraction")),
    )


def _family_index(family):
    return FAMILIES.index(family) if family in FAMILIES else len(FAMILIES)


def build_table(rows):
    """Keeps the newest run per (family, row, protocol); sorts by family.

    Args:
        rows: iterable of `Row`.

    Returns:
        list of `Row`.

    Raises:
        ValueError: if the kept rows come from different training lengths
            (e.g. a `--fraction 0.25` run newer than the full-length rows
            of other models): one table never mixes them.
    """
    newest = {}
    for r in rows:
        key = (r.family, r.row, r.protocol)
        if key not in newest or r.start_time > newest[key].start_time:
            newest[key] = r
    by_fraction = {}
    for r in newest.values():
        by_fraction.setdefault(r.fraction, []).append(r.row)
    if len(by_fraction) > 1:
        found = "; ".join(
            f"fraction {'unknown' if f is None else f}: {sorted(set(rs))}"
            for f, rs in sorted(by_fraction.items(), key=lambda kv: str(kv))
        )
        raise ValueError(
            "The newest rows come from different training lengths; re-run "
            "the other rows with the same --fraction (or make "
            "imagenet-table for full length) so that one table holds one "
            f"length. Received: {found}"
        )
    return sorted(
        newest.values(),
        key=lambda r: (
            _family_index(r.family),
            r.family,
            r.order,
            r.row,
            r.num_views,
        ),
    )


def fetch_rows(client, scale="mini", table="imagenet"):
    """Every evaluation run of `table` at `scale`, over all experiments."""
    experiments = client.search_experiments()
    runs = []
    for start in range(0, len(experiments), 50):
        ids = [e.experiment_id for e in experiments[start : start + 50]]
        runs += client.search_runs(
            ids,
            filter_string=(
                "tags.kind = 'evaluation' and "
                f"tags.`table` = '{table}' and tags.scale = '{scale}'"
            ),
            max_results=5000,
        )
    return [row_from_run(r) for r in runs]


def source_run_id(source):
    """The run id of a row source (`runs:/<id>/...` or a bare run id)."""
    return source.removeprefix("runs:/").split("/")[0]


def member_errors(client, row):
    """Each member's own top-1 error (percent), from its training run.

    A member's error is its final `val/top1_error`: the engine's
    validation pass at the end of training (a single centre crop). Sources
    that are not MLflow runs (`.keras` files, `keras:` models) or runs
    without the key are left out.

    Args:
        client: an `mlflow.MlflowClient`.
        row: a `Row`; its `sources` are the members' run ids.

    Returns:
        list of floats, in the members' order.
    """
    from mlflow.exceptions import MlflowException

    errors = []
    for source in filter(None, row.sources.split(",")):
        run_id = source_run_id(source)
        try:
            metrics = client.get_run(run_id).data.metrics
        except MlflowException:
            continue
        if mk.VAL_TOP1_ERROR in metrics:
            errors.append(100 * metrics[mk.VAL_TOP1_ERROR])
    return errors
