"""The `report:` hook that scores an experiment's trained runs for its
table rows (`report._target_:
convnet_repro.experiments.evaluate.evaluate_experiment`).

Each trained run is scored once per protocol; its per-image probabilities
go to a float32 scratch file, and every row (one model or an ensemble) is
the chunk-by-chunk mean of its members' files, logged as one evaluation run
with the row's float16 probabilities as an artifact. Memory stays that of
one batch of views, whatever the number of images or models. A row already
scored with the same models, protocol and settings (the rerun of a
finished experiment, whose training runs are skipped too) is not scored
again: its evaluation run is found (`records.find_evaluation`) and reused.
"""

import os
import tempfile

from convnet_repro.experiments.data.protocol_views import num_views
from convnet_repro.experiments.evaluation import predict
from convnet_repro.experiments.evaluation import records
from convnet_repro.experiments.evaluation import scoring
from convnet_repro.experiments.evaluation import sources
from convnet_repro.experiments.evaluation import store


def _child_runs(parent_run_id):
    from mlflow import MlflowClient

    from convnet_repro.experiments.engine.run_queries import child_runs

    return [r.info.run_id for r in child_runs(MlflowClient(), parent_run_id)]


def _as_container(value):
    from omegaconf import DictConfig
    from omegaconf import ListConfig
    from omegaconf import OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _members(row, run_ids, variants):
    members = row.get("members", "all")
    if members == "all":
        chosen = run_ids
    elif isinstance(members, (list, tuple)):
        chosen = [r for r in run_ids if variants[r] in members]
    else:
        chosen = run_ids[: int(members)]
    if not chosen:
        raise ValueError(
            "A table row selects no trained run; check its `members`. "
            f"Received: members={members!r}, runs={run_ids}"
        )
    return chosen


def _experiment_runs(name):
    """Trained runs of experiment `name`'s newest finished top-level run
    (its children, or itself): members a row borrows (`with_experiments`)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name(name)
    runs = []
    if exp is not None:
        runs = client.search_runs(
            [exp.experiment_id],
            filter_string="attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
        )
    top = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    if not top:
        raise ValueError(
            "A table row borrows the runs of an experiment with no finished "
            f"run; train it first. Received: with_experiments=[{name!r}]"
        )
    rid = top[0].info.run_id
    return _child_runs(rid) or [rid]


def _fraction(cfg):
    """The fraction of its steps the experiment trained for (1.0: full)."""
    extras = (cfg.get("extras") if cfg is not None else None) or {}
    return float(extras.get("fraction", 1.0))


def _row_tags(row, table, scale, family, index, cfg):
    """The tags of a row's evaluation run, but its parent run's id."""
    tags = {
        "table": table,
        "scale": scale,
        "family": row.get("family", family),
        "order": row.get("order", index),
        # the training length, so that a table never mixes lengths
        "fraction": _fraction(cfg),
    }
    for key in ("paper_top1_error", "paper_top5_error", "paper_source"):
        if row.get(key) is not None:
            tags[key] = row[key]
    return tags


def _skipped(row, protocol, run):
    """The result of a row scored before (`records.find_evaluation`)."""
    params, metrics = run.data.params, run.data.metrics
    print(
        f"[evaluate] {row['row']} ({protocol}): scored before, in evaluation "
        f"run {run.info.run_id}; skipped"
    )
    return {
        "row": row["row"],
        "run_id": run.info.run_id,
        "skipped": True,
        **{k: metrics[k] for k in ("top1_error", "top5_error")},
        **{
            k: int(params[k]) for k in ("num_views", "num_models", "num_images")
        },
    }


def evaluate_experiment(
    cfg,
    parent_run_id,
    rows,
    table="imagenet",
    scale="full",
    family="",
    resize=None,
    scales=None,
    batch_size=32,
    max_images=None,
    experiment_name=records.DEFAULT_EXPERIMENT,
    dataset=None,
    models_by_run=None,
):
    """`report:` hook: evaluates the trained models for every table row.

    The trained models are the child runs of `parent_run_id` (one per seed or
    variant, in start order) or, without children, the run itself. Each row
    picks `members` of them (`all`, a count, or a list of variant names),
    plus the trained runs of other experiments named in `with_experiments`
    (e.g. AlexNet's "7 CNNs*": two fine-tuned nets and the five CNNs), and a
    `protocol`, and becomes one MLflow evaluation run tagged with the row
    name, table, scale, family and the paper's numbers.

    Args:
        cfg: the experiment's composed config (its `data` node gives the
            validation images).
        parent_run_id: the training run (or the parent of the seed runs).
        rows: list of dicts `{row, protocol, members=all, order,
            paper_top1_error, paper_top5_error, family}`.
        table: table name tag (`imagenet`).
        scale: `full` (ImageNet) or `mini` (Imagenette).
        family: default family tag of the rows.
        resize: test shorter side (default: `data.resize_size` or
            256/224 of the crop).
        scales: `multi_crop` shorter sides (default 256-352 scaled).
        batch_size: images per prediction batch.
        max_images: evaluate the first `max_images` validation images only.
        experiment_name: MLflow experiment of the evaluation runs.
        dataset: optional unbatched `tf.data` overriding `cfg.data`.
        models_by_run: optional `{run_id: keras.Model}` (tests).

    Returns:
        list of dicts (row, evaluation run id and metrics; `skipped: True`
        for a row whose members were scored so before, on the config's
        images: a rerun of a finished experiment is not scored again).
    """
    from mlflow import MlflowClient

    rows = _as_container(rows)
    scales = _as_container(scales)
    run_ids = _child_runs(parent_run_id) or [parent_run_id]
    variants = {
        rid: MlflowClient().get_run(rid).data.tags.get("variant")
        for rid in run_ids
    }
    # A row is found scored only on the config's own images (a `dataset`
    # or `models_by_run` given by a test is not recorded in the run).
    own_data = dataset is None and models_by_run is None
    models_by_run = dict(models_by_run or {})
    if dataset is None:
        dataset, _ = predict.eval_dataset(cfg.data, max_images)
    if resize is None and cfg is not None and "data" in cfg:
        resize = cfg.data.get("resize_size")
    results = []
    scored = {}  # (run id, protocol) -> scratch prediction folder
    # How every row is scored (params of its evaluation run).
    params = {"resize": resize, "scales": scales, "max_images": max_images}
    with tempfile.TemporaryDirectory(prefix="evaluate_") as scratch:
        for index, row in enumerate(rows):
            protocol = row["protocol"]
            chosen = _members(row, run_ids, variants)
            for name in row.get("with_experiments") or []:
                chosen = chosen + _experiment_runs(name)
            tags = _row_tags(row, table, scale, family, len(results), cfg)
            done = own_data and records.find_evaluation(
                chosen, protocol, experiment_name, row["row"], tags, params
            )
            if done:  # these models on these images, scored so before
                results.append(_skipped(row, protocol, done))
                continue
            for rid in chosen:  # each model predicts each protocol once
                if (rid, protocol) in scored:
                    continue
                if rid not in models_by_run:
                    models_by_run[rid] = sources.load_model(rid)
                folder = os.path.join(scratch, f"{rid}-{protocol}")
                predict.predict_to_file(
                    models_by_run[rid],
                    dataset,
                    protocol,
                    store.PredictionWriter(folder, "float32"),
                    resize=resize,
                    scales=scales,
                    batch_size=batch_size,
                    max_images=max_images,
                )
                scored[rid, protocol] = folder
            row_dir = os.path.join(scratch, f"row{index}")
            writer = store.PredictionWriter(row_dir, "float16")
            counter = store.combine(
                [scored[rid, protocol] for rid in chosen],
                scoring.TopKCounter(),
                writer,
            )
            writer.close()
            result = {
                **counter.result(),
                "num_views": num_views(protocol, scales),
                "num_models": len(chosen),
            }
            eval_id = records.log_evaluation(
                result,
                chosen,
                protocol,
                experiment_name=experiment_name,
                row=row["row"],
                tags={**tags, "source_parent_run_id": parent_run_id},
                params=params,
                predictions=row_dir,
            )
            results.append({"row": row["row"], "run_id": eval_id, **result})
            print(
                f"[evaluate] {row['row']} ({protocol}, {len(chosen)} "
                f"model(s), {result['num_images']} images): top-1 "
                f"{result['top1_error']:.2f}% top-5 "
                f"{result['top5_error']:.2f}%"
            )
    return results
