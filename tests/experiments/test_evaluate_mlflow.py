"""Evaluation of engine-trained runs through MLflow: models loaded from
runs, the report hook's logged rows and stored predictions, and the CLI
scoring runs and combining what they stored.

The logged errors are recomputed in numpy from the runs' own models
(`evaluation_refs.softmax_errors`); the protocols themselves are checked
against numpy in `test_evaluate.py`.
"""

import keras
import numpy as np
import pytest
from omegaconf import OmegaConf

from convnet_repro.experiments import evaluate as ev
from convnet_repro.experiments.evaluation import predict
from convnet_repro.experiments.evaluation import records
from convnet_repro.experiments.evaluation import report_hook
from convnet_repro.experiments.evaluation import scoring
from convnet_repro.experiments.evaluation import sources
from convnet_repro.experiments.evaluation import store
from convnet_repro.experiments.reports import imagenet_stats
from tests.experiments.evaluation_refs import softmax_errors
from tests.experiments.evaluation_refs import tiny_dataset

# Two engine steps per seed, no evaluation report: real runs, quickly.
TINY = [
    "trainer.steps=2",
    "trainer.steps_per_execution=1",
    "trainer.eval_every_steps=2",
    "trainer.checkpoint_every_steps=2",
    "trainer.log_every_steps=2",
    "report=null",
    "trainer.jit_compile=false",
]


@pytest.fixture(scope="module")
def engine_runs(tmp_path_factory):
    """A parent run with two seed children trained by the engine (smoke
    config: 8x8x1 inputs, 4 classes): the runs, tags and model artifacts
    the evaluation reads, as training writes them."""
    import mlflow

    from convnet_repro.experiments.engine import train as train_lib
    from convnet_repro.experiments.engine.compose import compose

    root = tmp_path_factory.mktemp("mlflow")
    previous = mlflow.get_tracking_uri()
    cfg = compose(["experiment=smoke", "seeds=[0,1]", *TINY], root)
    result = train_lib.train(cfg)
    assert result["status"] == "FINISHED"
    children = report_hook._child_runs(result["run_id"])
    assert len(children) == 2
    yield {
        "root": root,
        "uri": cfg.tracking.uri,
        "parent": result["run_id"],
        "children": children,
    }
    mlflow.set_tracking_uri(previous)


def test_load_model_from_run_and_errors(engine_runs, tmp_path, monkeypatch):
    import tempfile

    import mlflow

    child = engine_runs["children"][0]
    # The downloaded file goes once the model is loaded (a full-size
    # model is 0.5-1 GB per load; they used to pile up in /tmp).
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model = sources.load_model(f"runs:/{child}")
    assert list(tmp_path.iterdir()) == []
    path = mlflow.MlflowClient().download_artifacts(
        child, "model/model.keras", str(engine_runs["root"])
    )
    logged = keras.saving.load_model(path, compile=False)
    x = np.random.default_rng(0).standard_normal((3, 8, 8, 1)).astype("f4")
    np.testing.assert_allclose(model(x), logged(x), rtol=1e-6)
    # The parent of a seeded run holds no model.
    with pytest.raises(ValueError, match="no .keras artifact"):
        sources.load_model(engine_runs["parent"])
    with pytest.raises(ValueError, match="models:/<name>/<version>"):
        sources.resolve_run_id("models:/only-name")
    assert mlflow.get_run(child).info.run_id == sources.resolve_run_id(child)


def test_evaluate_experiment_logs_rows(engine_runs):
    import mlflow

    rows = [
        {
            "row": "1 CNN",
            "members": 1,
            "protocol": "center",
            "paper_top1_error": 40.7,
        },
        {"row": "2 CNNs", "members": "all", "protocol": "ten_crop"},
    ]
    ds, images, labels = tiny_dataset(n=9, shape=(10, 12, 1), classes=4)
    parent = engine_runs["parent"]
    out = report_hook.evaluate_experiment(
        None,
        parent,
        OmegaConf.create(rows),  # as Hydra passes them
        scale="mini",
        family="AlexNet",
        resize=10,
        experiment_name="fake_table",
        dataset=ds,
    )
    assert [o["num_models"] for o in out] == [1, 2]
    assert [o["num_views"] for o in out] == [1, 10]
    run = mlflow.get_run(out[0]["run_id"])
    assert run.data.tags["row"] == "1 CNN"
    assert run.data.tags["family"] == "AlexNet"
    assert run.data.tags["paper_top1_error"] == "40.7"
    assert run.data.params["protocol"] == "center"
    # The logged errors, recomputed in numpy from the member's model: the
    # centre 8x8 crop of each 10x12 image (no resize: shorter side = 10).
    (member,) = run.data.params["sources"].split(",")
    assert member in engine_runs["children"]
    model = sources.load_model(member)
    centre = images[:, 1:9, 2:10].astype("float32")
    probs = scoring.softmax(keras.ops.convert_to_numpy(model(centre)))
    top1, top5 = softmax_errors(probs, labels)
    assert run.data.metrics["top1_error"] == pytest.approx(top1)
    assert run.data.metrics["top5_error"] == pytest.approx(top5)
    assert top5 == 0.0  # 4 classes: every label is in the top 5
    ens = mlflow.get_run(out[1]["run_id"])
    assert sorted(ens.data.params["sources"].split(",")) == sorted(
        engine_runs["children"]
    )
    # Members scored once and combined from disk = the live ensemble.
    models = [sources.load_model(c) for c in engine_runs["children"]]
    direct = predict.evaluate(models, ds, "ten_crop", resize=10)
    for key in ("top1_error", "top5_error", "num_views", "num_models"):
        assert out[1][key] == pytest.approx(direct[key])
    # Single (childless) run: the run itself is the model.
    one = report_hook.evaluate_experiment(
        None, member, rows[:1], resize=10, dataset=ds, experiment_name="t"
    )
    assert one[0]["num_models"] == 1
    assert one[0]["top1_error"] == pytest.approx(top1)
    # Each row's per-image probabilities are stored with its run.
    folder = records.stored_predictions(
        out[1]["run_id"], engine_runs["root"] / "d"
    )
    probs = np.load(f"{folder}/{store.PROBABILITIES}")
    np.testing.assert_array_equal(np.load(f"{folder}/{store.LABELS}"), labels)
    assert probs.shape == (9, 4) and probs.dtype == np.float16
    assert 100 * scoring.top_k_error(probs, labels, 1) == pytest.approx(
        out[1]["top1_error"]
    )
    # With the hits the row's error counted, which the paired tests read.
    hits = np.load(f"{folder}/{store.HITS}")
    assert 100 * (1 - hits[:, 0].mean()) == pytest.approx(out[1]["top1_error"])
    read = imagenet_stats.Correctness().get(out[1]["run_id"])
    np.testing.assert_array_equal(read["top1_error"], 1 - hits[:, 0])
    with pytest.raises(ValueError, match="selects no trained run"):
        report_hook.evaluate_experiment(
            None,
            parent,
            [{"row": "x", "members": ["nope"], "protocol": "center"}],
            dataset=ds,
        )


def test_a_rerun_does_not_score_the_same_models_again(engine_runs):
    """The long tier reruns its command every session: a finished
    experiment's rows are found, not scored again, unless a setting that
    changes the number (here `max_images`) differs."""
    import mlflow

    from convnet_repro.experiments.engine.compose import compose

    cfg = compose(
        ["experiment=smoke", "seeds=[0,1]", *TINY], engine_runs["root"]
    )
    rows = [{"row": "2 CNNs", "members": "all", "protocol": "center"}]
    kwargs = {"scale": "mini", "experiment_name": "rerun_table", "resize": 8}
    parent = engine_runs["parent"]
    first = report_hook.evaluate_experiment(cfg, parent, rows, **kwargs)
    assert "skipped" not in first[0]
    again = report_hook.evaluate_experiment(cfg, parent, rows, **kwargs)
    assert again[0]["skipped"] and again[0]["run_id"] == first[0]["run_id"]
    for key in ("top1_error", "top5_error", "num_images", "num_models"):
        assert again[0][key] == first[0][key]
    fewer = report_hook.evaluate_experiment(
        cfg, parent, rows, max_images=3, **kwargs
    )
    assert "skipped" not in fewer[0] and fewer[0]["num_images"] == 3
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("rerun_table")
    assert len(client.search_runs([experiment.experiment_id])) == 2


def test_cli_scores_runs_and_combines_stored_predictions(engine_runs, tmp_path):
    import mlflow

    from convnet_repro.experiments.engine.compose import compose

    uri = engine_runs["uri"]
    common = ["--experiment", "smoke", "--tracking-uri", uri]
    common += ["--protocol", "ten_crop", "--max-images", "20"]
    common += ["--resize", "8"]  # the 8x8 images as they are
    runs = engine_runs["children"][:2]
    argv = [runs[0], *common, "--row", "r", "--experiment-name", "cli"]
    out = ev.main(argv + ["--scale", "full"])
    logged = mlflow.get_run(out["run_id"])
    stored = records.stored_predictions(out["run_id"], tmp_path / "dl")
    second = ev.main([runs[1], *common])
    live = ev.main(runs + common)  # both models at once
    combined = ev.main(
        [out["run_id"], second["run_id"], "--combine", "--tracking-uri", uri]
    )
    with pytest.raises(ValueError, match="--experiment NAME or --data"):
        ev.main([runs[0], "--tracking-uri", uri])
    assert out["num_images"] == 20 and out["num_views"] == 10
    assert logged.data.tags["row"] == "r"
    assert logged.data.tags["scale"] == "full"
    assert logged.data.params["sources"] == runs[0]
    # The logged errors, recomputed in numpy: ten crops of an 8x8 image
    # with an 8x8 crop are the image five times and its mirror five times.
    ds, _ = predict.eval_dataset(compose(["experiment=smoke"]).data)
    images = np.stack([x.numpy() for x, _ in ds.take(20)])
    labels = np.array([int(y) for _, y in ds.take(20)])
    models = [sources.load_model(r) for r in runs]

    def probs_of(model):
        return (
            sum(
                scoring.softmax(keras.ops.convert_to_numpy(model(view)))
                for view in (images, images[:, :, ::-1])
            )
            / 2
        )

    top1, top5 = softmax_errors(probs_of(models[0]), labels)
    assert logged.data.metrics["top1_error"] == pytest.approx(top1, abs=1e-4)
    assert logged.data.metrics["top5_error"] == pytest.approx(top5, abs=1e-4)
    # The stored float16 probabilities are the model's, per image.
    probs = np.load(f"{stored}/{store.PROBABILITIES}")
    np.testing.assert_array_equal(np.load(f"{stored}/{store.LABELS}"), labels)
    assert probs.shape == (20, 4) and probs.dtype == np.float16
    np.testing.assert_allclose(probs, probs_of(models[0]), atol=1e-3)
    # Two separately scored runs, combined from storage = the live ensemble
    # = the numpy average of the two models' probabilities.
    both = (probs_of(models[0]) + probs_of(models[1])) / 2
    top1, top5 = softmax_errors(both, labels)
    assert combined["num_models"] == 2 and live["num_models"] == 2
    for result in (combined, live):
        assert result["top1_error"] == pytest.approx(top1, abs=1e-4)
        assert result["top5_error"] == pytest.approx(top5, abs=1e-4)


@pytest.mark.usefixtures("restore_tracking_uri")
def test_find_evaluation_reads_past_the_first_page(tmp_path, monkeypatch):
    """The sought row is found when newer evaluations fill the first page
    (pages of 2 here; MLflow's default page is 1,000 runs)."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlruns.db")
    result = {"top1_error": 0.5, "top5_error": 0.1, "num_models": 1}
    result.update(num_views=1, num_images=4)

    def log(row):
        return records.log_evaluation(
            result, ["run-a"], "center", "paged", row=row, params={"k": 1}
        )

    sought = log("sought")
    for i in range(5):
        log(f"newer {i}")
    search = mlflow.MlflowClient.search_runs
    pages = []

    def small_pages(self, *args, **kwargs):
        pages.append(kwargs.get("page_token"))
        return search(self, *args, **{**kwargs, "max_results": 2})

    monkeypatch.setattr(mlflow.MlflowClient, "search_runs", small_pages)
    found = records.find_evaluation(
        ["run-a"], "center", "paged", "sought", None, {"k": 1}
    )
    assert found.info.run_id == sought and len(pages) == 3
    missing = records.find_evaluation(
        ["run-a"], "center", "paged", "other", None, {"k": 1}
    )
    assert missing is None and len(pages) == 6
