"""`python -m convnet_repro.experiments.evaluate` on engine-trained runs.

Each test trains a mini config for two steps on a few real Imagenette
images through `experiments.engine.train.train`, then scores the run exactly as
the README says. The engine's `SparseTopKAccuracy` is registered only where
`experiments.engine.optimization` was imported, which is how the CLI used
to fail
on every top_k > 1 run: the slow tests score in a fresh process, the fast
one in-process with that registration removed.
"""

import os
import subprocess
import sys

import mlflow
import pytest

from convnet_repro.experiments import evaluate as ev
from convnet_repro.experiments.engine import train as train_lib
from convnet_repro.experiments.engine.compose import compose
from convnet_repro.experiments.engine.tracking import flatten
from convnet_repro.experiments.engine.tracking import resolved_container
from convnet_repro.experiments.evaluation import sources
from tests.conftest import REPO_ROOT

# Data overrides shared by training and scoring (a few real images).
DATA = ["data.num_train_examples=32", "data.num_val_examples=16"]
DATA += ["data.batch_size=8"]
TINY = [
    "trainer.steps=2",
    "trainer.steps_per_execution=1",
    "trainer.eval_every_steps=2",
    "trainer.checkpoint_every_steps=2",
    "report=null",
    "trainer.jit_compile=false",
]
# experiment -> (extra training overrides, a README-style row name)
FAMILIES = {
    "imagenette_alexnet_5cnns": (["seeds=[0]"], "AlexNet, 1 CNN"),
    "imagenette_resnet18": ([], "ResNet-18"),
    "imagenette_vgg_a": ([], "VGG-A"),
    "imagenette_googlenet": ([], "GoogLeNet, 1 model"),
}


pytestmark = pytest.mark.usefixtures("restore_tracking_uri")


def _train(tmp_path, experiment):
    extra, _ = FAMILIES[experiment]
    cfg = compose([f"experiment={experiment}", *DATA, *TINY, *extra], tmp_path)
    result = train_lib.train(cfg)
    assert result["status"] == "FINISHED"
    client = mlflow.MlflowClient()
    run_id = result["run_id"]
    children = client.search_runs(
        [client.get_run(run_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{run_id}'",
    )
    # Seeded experiments log the model in the child run.
    return cfg, children[0].info.run_id if children else run_id


def _cli(uri, *args):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "convnet_repro.experiments.evaluate", *args]
        + ["--tracking-uri", uri]
        + [a for d in DATA for a in ("--override", d)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _score_as_the_readme_says(tmp_path, experiment):
    cfg, run_id = _train(tmp_path, experiment)
    uri = cfg.tracking.uri
    row = FAMILIES[experiment][1]
    done = _cli(
        uri,
        run_id,
        "--protocol",
        "ten_crop",
        "--experiment",
        experiment,
        "--row",
        row,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(
        experiment_names=["imagenet_table"], output_format="list"
    )
    (evaluation,) = [r for r in runs if r.data.tags.get("row") == row]
    assert evaluation.data.params["sources"] == run_id
    assert evaluation.data.params["num_views"] == "10"
    assert evaluation.data.params["num_images"] == "16"
    assert 0 <= evaluation.data.metrics["top5_error"] <= 100
    return cfg, run_id


def _argv(run_id, uri, *args):
    overrides = [a for d in DATA for a in ("--override", d)]
    return [run_id, *args, "--tracking-uri", uri, *overrides]


def test_an_engine_trained_run_scores_without_the_engine_registered(
    tmp_path, monkeypatch
):
    from keras.src.saving import object_registration

    cfg, run_id = _train(tmp_path, "imagenette_alexnet_5cnns")
    # A fresh `python -m convnet_repro.experiments.evaluate` has not imported
    # the module
    # registering the engine's top-5 metric: neither may this test.
    monkeypatch.delitem(
        object_registration.GLOBAL_CUSTOM_OBJECTS, "repro>SparseTopKAccuracy"
    )
    argv = ["--protocol", "ten_crop", "--row", "AlexNet, 1 CNN"]
    out = ev.main(
        _argv(
            run_id, cfg.tracking.uri, *argv, "--experiment", cfg.experiment_name
        )
    )
    assert out["num_images"] == 16 and out["num_views"] == 10
    # Same run, other data (the plain Imagenette config decodes to 96 px,
    # the mini table to 72): refused, the key named, before any scoring.
    with pytest.raises(ValueError, match="data.decode_size: run '72'"):
        ev.main(_argv(run_id, cfg.tracking.uri, "--data", "imagenette"))


def test_an_engine_smoke_run_scores_on_its_generated_data(
    tmp_path, monkeypatch
):
    """The engine's own test data (fixed 8x8 images, no crop settings)."""
    from keras.src.saving import object_registration

    cfg = compose(["experiment=smoke", *TINY], tmp_path)
    run_id = train_lib.train(cfg)["run_id"]
    monkeypatch.delitem(
        object_registration.GLOBAL_CUSTOM_OBJECTS, "repro>SparseTopKAccuracy"
    )
    argv = [run_id, "--experiment", "smoke", "--protocol", "ten_crop"]
    out = ev.main(
        argv + ["--max-images", "50", "--tracking-uri", cfg.tracking.uri]
    )
    assert out["num_images"] == 50 and out["num_views"] == 10
    assert out["top1_error"] == 100 * round(out["top1_error"] / 100 * 50) / 50


def test_evaluations_carry_the_training_length_of_their_models(tmp_path):
    """The CLI tags `fraction` as the table runner does, so that a CLI row
    and a table row of the same length share one table (and a shortened
    model never hides in a full-length one)."""
    full = compose(["experiment=smoke", *TINY], tmp_path / "full")
    uri = full.tracking.uri
    short = compose(
        ["experiment=smoke", *TINY, "++extras.fraction=0.5"]
        + [f"trainer.{k}=1" for k in ("steps", "eval_every_steps")]
        + ["trainer.checkpoint_every_steps=1"],
        tmp_path / "s",
    )
    short.tracking.uri = uri
    ids = [train_lib.train(c)["run_id"] for c in (full, short)]
    argv = ["--experiment", "smoke", "--max-images", "4"]
    argv += ["--tracking-uri", uri]
    tags = [
        mlflow.MlflowClient().get_run(ev.main([i, *argv])["run_id"]).data.tags
        for i in ids
    ]
    assert [t.get("fraction") for t in tags] == ["1.0", "0.5"]
    with pytest.raises(ValueError, match=r"fractions=\[0.5, 1.0\]"):
        ev.main([*ids, *argv])


@pytest.mark.slow
@pytest.mark.parametrize("experiment", list(FAMILIES))
def test_cli_scores_engine_trained_runs_of_each_family(tmp_path, experiment):
    cfg, run_id = _score_as_the_readme_says(tmp_path, experiment)
    if experiment == "imagenette_alexnet_5cnns":
        argv = _argv(run_id, cfg.tracking.uri, "--data", "imagenette")
        out = ev.main(argv + ["--max-images", "4", "--allow-data-mismatch"])
        assert out["num_images"] == 4


def test_data_mismatch_names_binarized_against_grey_mnist():
    trained = compose(["data=mnist", "data.binarize=true"])
    params = {
        k: str(v)[:6000]
        for k, v in flatten(resolved_container(trained)).items()
    }
    requested = compose(["data=mnist", "data.batch_size=500"])
    assert sources.data_mismatch(params, requested.data) == {
        "data.binarize": ("True", False)
    }
    assert sources.data_mismatch(params, trained.data) == {}


@pytest.mark.slow
def test_cli_scores_our_resnet50_with_keras_applications_weights(tmp_path):
    """`keras:resnet50` (random reference weights, offline) scored by the
    CLI equals the `keras.applications` model itself under the same
    protocol, fed caffe-preprocessed raw pixels as Keras documents."""
    import keras
    import numpy as np

    from convnet_repro.experiments.evaluation import predict
    from convnet_repro.experiments.evaluation import records
    from convnet_repro.experiments.evaluation import store
    from convnet_repro.models.keras_applications import build_reference

    uri = f"sqlite:///{tmp_path}/keras.db"
    argv = ["keras:resnet50", "--keras-weights", "none", "--data"]
    argv += ["imagenette", "--protocol", "ten_crop", "--max-images", "4"]
    argv += ["--tracking-uri", uri]
    argv += [a for d in DATA for a in ("--override", d)]
    keras.utils.set_random_seed(7)
    out = ev.main(argv)
    assert out["num_images"] == 4 and out["num_views"] == 10
    mlflow.set_tracking_uri(uri)
    folder = records.stored_predictions(out["run_id"], tmp_path / "dl")
    ours = np.load(f"{folder}/{store.PROBABILITIES}").astype(np.float32)
    assert ours.shape == (4, 1000)

    keras.utils.set_random_seed(7)  # the same random reference weights
    reference = build_reference("resnet50", None, 1000, (64, 64, 3))
    raw = compose(["data=imagenette", *DATA, "data.rescale=1.0"])
    raw.data.mean = None
    ds, _ = predict.eval_dataset(raw.data, 4)
    writer = store.PredictionWriter(tmp_path / "ref", "float32")
    predict.evaluate(
        [reference],
        ds,
        "ten_crop",
        writer=writer,
        resize=raw.data.resize_size,
        preprocess=lambda v: keras.applications.imagenet_utils.preprocess_input(
            v, mode="caffe"
        ),
    )
    expected = np.load(f"{writer.close()}/{store.PROBABILITIES}")
    np.testing.assert_allclose(ours, expected, atol=2e-3)
    with pytest.raises(ValueError, match="--keras-weights imagenet"):
        ev.main(argv[:1] + argv[3:])
