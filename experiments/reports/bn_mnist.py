"""BN paper Fig. 1 on MNIST: the table, claims with tests, and figures.

Reads the finished MLflow child runs of one `bn_mnist*` experiment (one run
per variant and seed; `baseline` = without BN, `bn` = with BN) and writes,
to the parent run's artifacts (`report/`) and to `results_dir` (committed):
`table.md` / `table.csv` (one row per network, with run ids, steps, seeds
and image counts), `summary.json` and Fig. 1 (`bn_mnist_figures`).

Headline = final test accuracy with Alg. 2 population statistics, scored
per image from each run's logged final model (`model/model.keras`, saved
after the recompute), so the paired tests see which images each run gets
right. Intervals and tests come from `experiments.reports.statistics`,
`paired_tests` and `smoothing`:
accuracy = seed mean with a 95% interval combining the seed spread (t) and
the test-set standard error; BN vs. no BN = bootstrap over seeds and test
images; steps to X% = first evaluation from which the centred 3-point
moving average stays >= X (`smoothing.steps_to_threshold`), Welch-tested
over seeds. The tuning split (the 10,000 training images that
`data.num_train_examples=50000` leaves out) is scored too; MNIST test is
used only for the reported numbers. The report refuses to mix runs of
different lengths or data settings.

CLI: `python -m convnet_repro.experiments.reports.bn_mnist --parent-run-id <id>
[--experiment bn_mnist] [--tracking-uri sqlite:///mlruns.db]`

Reference: Ioffe & Szegedy, "Batch Normalization", ICML 2015,
arXiv:1502.03167, Sec. 4.1, Figure 1, Alg. 2.
"""

import argparse

import numpy as np

from convnet_repro.experiments.engine import metric_keys as mk
from convnet_repro.experiments.reports import resolve_dir
from convnet_repro.experiments.reports.bn_mnist_summary import PROTOCOL_KEYS
from convnet_repro.experiments.reports.bn_mnist_summary import SMOOTH_WINDOW
from convnet_repro.experiments.reports.bn_mnist_summary import _clean
from convnet_repro.experiments.reports.bn_mnist_summary import summarize
from convnet_repro.experiments.reports.bn_mnist_table import format_markdown
from convnet_repro.experiments.reports.bn_mnist_table import write_outputs

MNIST_TRAIN_SIZE = 60_000


def tuning_split_index(num_train, total=MNIST_TRAIN_SIZE):
    """Indices of the training images that `num_train_examples` leaves out.

    `experiments.data.make_datasets` keeps the first `num_train` of a fixed
    seed-0 permutation (`data.splits.subset`); the rest is the tuning split.
    """
    if not 0 < num_train < total:
        raise ValueError(
            f"No tuning split: data.num_train_examples must be in (0, {total})."
            f" Received: {num_train!r}"
        )
    return np.sort(np.random.default_rng(0).permutation(total)[num_train:])


def load_eval_sets(data_cfg):
    """`{"test": (x, y), "tuning": (x, y) or None}` as the model sees them.

    Pixels are preprocessed as `make_datasets` does for MNIST (`rescale`,
    then `binarize` at 0.5); the test set keeps its file order.
    """
    from convnet_repro.experiments.data import data_root
    from convnet_repro.experiments.data import idx_format

    directory = data_root.resolve_local_dir("mnist", data_cfg.get("local_dir"))
    if directory is None:
        raise FileNotFoundError(
            "MNIST IDX files not found; set CONVNET_REPRO_DATA_DIR or "
            "data.local_dir (the report scores each model per image)."
        )

    def prep(images):
        x = images.astype(np.float32) * float(data_cfg.get("rescale", 1 / 255))
        return (x > 0.5).astype(np.float32) if data_cfg.get("binarize") else x

    out = {"test": None, "tuning": None}
    x, y = idx_format.load_idx_split(directory, "test")
    out["test"] = (prep(x), y)
    n = data_cfg.get("num_train_examples")
    if n:
        x, y = idx_format.load_idx_split(directory, "train")
        idx = tuning_split_index(int(n), len(y))
        out["tuning"] = (prep(x[idx]), y[idx])
    return out


def score_model(client, run_id, eval_sets):
    """0/1 correctness per image of a run's logged final model."""
    import tempfile

    import keras

    from convnet_repro import layers  # noqa: F401  (registers the custom layers)
    from convnet_repro import models  # noqa: F401

    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, "model/model.keras", tmp)
        model = keras.saving.load_model(path, compile=False)
    out = {}
    for split, data in eval_sets.items():
        if data is not None:
            pred = model.predict(data[0], batch_size=10_000, verbose=0)
            out[split] = (np.argmax(pred, -1) == data[1]).astype(np.int8)
    return out


def fetch_runs(
    client,
    parent_run_id,
    metric,
    population_metric,
    percentile_keys,
    eval_sets=None,
):
    """Reads every finished run below `parent_run_id` that logged `metric`.

    A run's variant is its `variant` tag (or param), else its parent's name
    if that parent is itself below `parent_run_id`, else its own run name;
    its seed is its `seed` tag or param.

    Args:
        client: an `mlflow.MlflowClient`.
        parent_run_id: str, the parent run of the experiment.
        metric: the test-accuracy key logged during training.
        population_metric: key of the final test accuracy with Alg. 2
            population statistics (absent for runs without BN is fine).
        percentile_keys: dict `{q: metric key}` of the probe's percentiles.
        eval_sets: optional evaluation sets for per-image scoring.

    Returns:
        A list of run dicts for `summarize`.

    Raises:
        ValueError: if no run below the parent logged `metric`.
    """
    from convnet_repro.experiments.engine.run_queries import descendant_runs

    runs = descendant_runs(client, parent_run_id)
    names = {r.info.run_id: r.info.run_name for r in runs}
    out = []
    for run in runs:
        if metric not in run.data.metrics or run.info.status != "FINISHED":
            continue  # a run still going (or failed) has no final model
        tags, params = run.data.tags, run.data.params
        up = tags.get("mlflow.parentRunId")
        variant = (
            tags.get("variant")
            or params.get("variant")
            or (names.get(up) if up != parent_run_id else None)
            or run.info.run_name
        )
        rid = run.info.run_id
        item = {
            "variant": variant,
            "seed": tags.get("seed", params.get("seed")),
            "run_id": rid,
            "start_time": run.info.start_time,
            "end_time": run.info.end_time,
            "params": {k: params.get(k) for k in PROTOCOL_KEYS},
            "accuracy": [
                (m.step, m.value)
                for m in client.get_metric_history(rid, metric)
            ],
            "accuracy_population": run.data.metrics.get(population_metric),
            "percentiles": {},
        }
        for q, key in dict(percentile_keys).items():
            hist = client.get_metric_history(rid, key)
            if hist:
                item["percentiles"][q] = [(m.step, m.value) for m in hist]
        has_model = any(
            a.path.endswith("model.keras")
            for a in client.list_artifacts(rid, "model")
        )
        if eval_sets is not None and has_model:  # else: logged accuracies
            scored = score_model(client, rid, eval_sets)
            item["correct_test"] = scored.get("test")
            item["correct_tuning"] = scored.get("tuning")
            logged = (
                item["accuracy_population"] or _clean(item["accuracy"])[-1][1]
            )
            item["model_check"] = abs(float(np.mean(scored["test"])) - logged)
        out.append(item)
    if not out:
        raise ValueError(
            f"No run below the parent logged {metric!r}; check report.metric. "
            f"Received: parent_run_id={parent_run_id!r}"
        )
    return out


def report(
    cfg,
    parent_run_id,
    metric=mk.VAL_TOP1_ACCURACY,
    population_metric=mk.population_key(mk.VAL_TOP1_ACCURACY),
    probe_prefix="sigmoid_in",
    probe_unit=0,
    percentiles=(15, 50, 85),
    baseline="baseline",
    treatment="bn",
    results_dir="results/bn_mnist",
    title=None,
    score_models=True,
):
    """Writes Fig. 1 (a, b, c), the table and the claims of one experiment.

    Args:
        cfg: the experiment's config (`DictConfig`, dict or `None`):
            `experiment_name`, `data` (to score the models) and `paper.note`.
        parent_run_id: str, MLflow id of the parent run (tracking URI set).
        metric: moving-average test accuracy logged every evaluation.
        population_metric: final test accuracy with Alg. 2 statistics.
        probe_prefix, probe_unit, percentiles: the `PercentileProbe` keys.
        baseline, treatment: the variants without and with BN.
        results_dir: folder for the committed copies (relative to the repo).
        title: optional table heading.
        score_models: score each logged model per image (paired tests,
            tuning split); False uses the logged accuracies only.

    Returns:
        The `summarize` dict plus `wall_time_s` and `written`.
    """
    import mlflow
    from omegaconf import DictConfig
    from omegaconf import OmegaConf

    from convnet_repro.experiments.probes import metric_key

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    cfg = cfg or {}
    client = mlflow.MlflowClient()
    keys = {q: metric_key(probe_prefix, probe_unit, q) for q in percentiles}
    eval_sets = load_eval_sets(cfg.get("data") or {}) if score_models else None
    runs = fetch_runs(
        client, parent_run_id, metric, population_metric, keys, eval_sets
    )
    num_test = 10_000 if eval_sets is None else len(eval_sets["test"][1])
    summary = summarize(runs, baseline, treatment, num_test)
    starts = [r["start_time"] for r in runs if r["start_time"]]
    ends = [r["end_time"] for r in runs if r["end_time"]]
    wall = (max(ends) - min(starts)) / 1000 if starts and ends else None
    checks = [r["model_check"] for r in runs if "model_check" in r]
    notes = [
        f"Child runs of MLflow run `{parent_run_id}` (run ids above, first 8 "
        "characters). Test acc. = the 10,000 MNIST test images, never used "
        "for a choice; tuning split = the 10,000 training images left out of "
        "training (`data.num_train_examples`). Alg. 2 = population statistics "
        "over one pass of the training set, "
        + (
            "scored per image from each run's final model (matches the "
            f"logged `{population_metric}` to {max(checks):.1e})."
            if checks
            else f"the logged `{population_metric}` (no logged model)."
        ),
        "Intervals: seed mean with a 95% half-width sqrt((t_{n-1} s / "
        "sqrt(n))^2 + (1.96 sqrt(p(1-p)/N))^2): seed spread and the test "
        "set's standard error (shared by all seeds) in quadrature. Steps to "
        f"X%: first evaluation from which the centred {SMOOTH_WINDOW}-point "
        "moving average of the moving-average test accuracy stays >= X to "
        "the end; mean over seeds [95% t-interval, lower end clipped at "
        "0]; when not every seed gets there, the steps of those that do.",
        "Claims: BN vs. no BN final accuracy by a bootstrap that resamples "
        "seeds within each network and test images jointly (2,000 "
        "replicates, seed 0), exact McNemar per seed pair beside it; steps "
        "and percentile ranges by Welch t over seeds. Verdict: holds / fails "
        "when the 95% interval excludes 0 (in / against the paper's "
        "direction), else not significant.",
    ]
    paper = cfg.get("paper") or {}
    if paper.get("note"):
        notes.append(f"Paper: {paper['note']}")
    if wall is not None:
        notes.append(
            f"Wall time of the {len(runs)} runs (first start to last end): "
            f"{wall:.0f} s, on a 2-core machine shared with other jobs."
        )
    if cfg.get("experiment_name"):
        title = title or f"{cfg['experiment_name']} (cf. BN paper Fig. 1)"
    written = write_outputs(
        summary,
        resolve_dir(results_dir),
        title,
        notes,
        extra={"wall_time_s": wall, "parent_run_id": parent_run_id},
    )
    for path in written:
        client.log_artifact(parent_run_id, str(path), "report")
    return {
        **summary,
        "wall_time_s": wall,
        "written": [str(p) for p in written],
    }


def main(argv=None):
    """CLI: rebuild the report of a finished parent run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parent-run-id", required=True)
    parser.add_argument("--experiment", default="bn_mnist")
    parser.add_argument(
        "--tracking-uri", default=None, help="default: the config's tracking"
    )
    parser.add_argument("--results-dir", default=None)
    args = parser.parse_args(argv)

    from omegaconf import OmegaConf

    from convnet_repro.experiments.engine import tracking
    from convnet_repro.experiments.engine.compose import compose

    cfg = compose([f"experiment={args.experiment}"])
    tracking.configure_cli(cfg.tracking, cfg.experiment_name, args.tracking_uri)
    kwargs = OmegaConf.to_container(cfg.report, resolve=True)
    kwargs = {k: v for k, v in kwargs.items() if not k.startswith("_")}
    if args.results_dir:
        kwargs["results_dir"] = args.results_dir
    out = report(cfg, args.parent_run_id, **kwargs)
    print(format_markdown(out))
    print(f"wall time {out['wall_time_s']} s; wrote {out['written']}")


if __name__ == "__main__":
    main()
