"""What makes an experiment's runs compare themselves in the MLflow UI.

- Descriptions (`mlflow.note.content`, the UI's "Description" box) on the
  experiment, the parent run and each child run, citing the paper table or
  figure (`paper.source` / `paper.reference` of the config).
- Seed-mean curves per variant on the parent run: `curve/<key>/<variant>`
  at every step the children logged `<key>` (`val/*` metrics). The UI's
  run page groups charts by the key's prefix, so `curve/val/top1_accuracy`
  holds one chart per variant side by side: the paper's figure (BN
  Fig. 1(a), Fig. 2) on the parent's "Model metrics" tab.

MLflow's own grouping (runs table "Group by" a tag, here `variant`) shows
mean and spread of the child curves too, but only on the runs page and only
after three clicks; the parent's metrics are what the run page charts and
what `mlflow.get_metric_history` returns to scripts.
"""

import math

import mlflow
from omegaconf import DictConfig
from omegaconf import OmegaConf

from convnet_repro.experiments.engine import metric_keys as mk
from convnet_repro.experiments.engine.config_checks import active_variants

NOTE_TAG = "mlflow.note.content"
CURVE_PREFIX = mk.CURVE_PREFIX
_BATCH = 1000  # MLflow's log_batch limit of metrics per call


def _paper(cfg):
    paper = OmegaConf.select(cfg, "paper")
    if isinstance(paper, DictConfig):
        paper = OmegaConf.to_container(paper, resolve=True)
    paper = paper or {}
    return paper.get("source") or paper.get("reference") or ""


def _source_line(cfg):
    source = " ".join(str(_paper(cfg)).split())
    return f"Reproduces: {source}." if source else ""


def experiment_note(cfg):
    """Markdown description of the experiment (name, paper, how to look)."""
    lines = [f"**{cfg.experiment_name}**", _source_line(cfg)]
    variants = active_variants(cfg)
    if variants:
        lines.append(
            f"Variants {', '.join(variants)} x seeds "
            f"{list(cfg.seeds or [cfg.seed])}: one parent run per command; "
            "its charts `curve/val/*/<variant>` are the seed-mean curves "
            "(the paper's figure), the child runs hold each seed."
        )
    return "\n\n".join(x for x in lines if x)


def run_note(cfg, child=None):
    """Markdown description of a parent run (`child=None`) or a child run."""
    if child is None:
        return experiment_note(cfg)
    what = []
    if child.variant is not None:
        what.append(f"variant **{child.variant}**")
    if child.seed is not None:
        what.append(f"seed {child.seed}")
    lines = [
        f"{', '.join(what) or child.name} of {cfg.experiment_name}",
        _source_line(cfg),
    ]
    return "\n\n".join(x for x in lines if x)


def describe_experiment(client, experiment_id, cfg):
    """Sets the experiment's description (idempotent)."""
    client.set_experiment_tag(experiment_id, NOTE_TAG, experiment_note(cfg))


def variant_curves(client, runs, prefix=mk.VAL_PREFIX):
    """Seed-mean curves of each variant from the children's histories.

    Args:
        client: an `MlflowClient`.
        runs: `[(variant, run_id), ...]`, several runs per variant (seeds).
        prefix: which metrics to average.

    Returns:
        `{f"curve/{key}/{variant}": [(step, mean), ...]}`, steps ascending,
        only at steps every run of the variant logged (NaN values skipped),
        only metrics logged at two steps or more.
    """
    by_variant = {}
    for variant, run_id in runs:
        by_variant.setdefault(variant, []).append(run_id)
    curves = {}
    for variant, run_ids in by_variant.items():
        logged = [set(client.get_run(r).data.metrics) for r in run_ids]
        keys = {k for k in set.intersection(*logged) if k.startswith(prefix)}
        for key in sorted(keys):
            per_run = []
            for run_id in run_ids:
                history = client.get_metric_history(run_id, key)
                per_run.append({m.step: m.value for m in history})
            steps = set.intersection(*(set(h) for h in per_run))
            points = []
            for step in sorted(steps):
                values = [h[step] for h in per_run]
                if all(math.isfinite(v) for v in values):
                    points.append((step, sum(values) / len(values)))
            if len(points) > 1:  # a curve (finals are `mean/*`)
                curves[mk.curve_key(key, variant)] = points
    return curves


def log_variant_curves(client, parent_run_id, runs, prefix=mk.VAL_PREFIX):
    """Logs `variant_curves` as step metrics of the parent run.

    Timestamp 0 (as the parent's `mean/*`): a rerun logs the same rows
    again, not a second point per step.

    Returns:
        The curves logged (see `variant_curves`).
    """
    curves = variant_curves(client, runs, prefix)
    metrics = [
        mlflow.entities.Metric(key, value, 0, step)
        for key, points in curves.items()
        for step, value in points
    ]
    for i in range(0, len(metrics), _BATCH):
        client.log_batch(parent_run_id, metrics=metrics[i : i + _BATCH])
    return curves
