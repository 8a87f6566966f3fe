"""Tests for `experiments.evaluation`: views, averaging, top-k, streaming
memory, stored predictions, MLflow I/O, and the CLI on engine-trained runs.

Every numerical check compares with a NumPy reference written straight from
the protocol definitions (Krizhevsky et al. 2012 Sec. 4.1 ten crops;
Szegedy et al. 2015 Sec. 7 multi-crop). Engine-trained runs scored through
the CLI are in `test_evaluate_runs.py`.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from omegaconf import OmegaConf

from convnet_repro.experiments import evaluate as ev
from convnet_repro.experiments.data import protocol_views as pv
from convnet_repro.experiments.evaluation import predict
from convnet_repro.experiments.evaluation import records
from convnet_repro.experiments.evaluation import report_hook
from convnet_repro.experiments.evaluation import scoring
from convnet_repro.experiments.evaluation import sources
from convnet_repro.experiments.evaluation import store


def np_five_crops(image, crop):
    """Centre, TL, TR, BL, BR crops of an (H, W, C) array."""
    h, w = image.shape[:2]
    cy, cx = (h - crop) // 2, (w - crop) // 2
    return np.stack(
        [
            image[cy : cy + crop, cx : cx + crop],
            image[:crop, :crop],
            image[:crop, w - crop :],
            image[h - crop :, :crop],
            image[h - crop :, w - crop :],
        ]
    )


def np_ten_crops(image, crop):
    five = np_five_crops(image, crop)
    return np.concatenate([five, five[:, :, ::-1]])


def test_num_views():
    assert pv.num_views("center") == 1
    assert pv.num_views("ten_crop") == 10
    assert pv.num_views("multi_crop") == 144  # GoogLeNet: 4 scales
    assert pv.num_views("multi_crop", scales=[64, 72]) == 72


def test_unknown_protocol_message():
    with pytest.raises(ValueError, match="Received: protocol='dense'"):
        pv.num_views("dense")


def test_ten_crop_matches_numpy_on_a_rectangle():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (6, 9, 3)).astype(np.float32)
    # Shorter side already equals `resize`: the resize is the identity.
    views = pv.image_views(image, "ten_crop", crop=4, resize=6).numpy()
    assert views.shape == (10, 4, 4, 3)
    np.testing.assert_allclose(views, np_ten_crops(image, 4), atol=1e-3)
    centre = pv.image_views(image, "center", crop=4, resize=6).numpy()
    np.testing.assert_allclose(centre[0], np_five_crops(image, 4)[0], atol=1e-3)


def test_ten_crop_resizes_shorter_side_first():
    image = np.zeros((20, 40, 3), np.uint8)
    resized = pv.resize_shorter_side(tf.cast(image, tf.float32), 10)
    assert tuple(resized.shape) == (10, 20, 3)
    views = pv.image_views(image, "ten_crop", crop=8)  # default resize 9
    assert tuple(views.shape) == (10, 8, 8, 3)


def test_multi_crop_views_numpy():
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 255, (4, 6, 3)).astype(np.float32)
    # One scale equal to the shorter side: no resize; squares of side 4 at
    # x = 0, 1, 2; per square 5 crops of side 3 + the square resized to 3.
    views = pv.image_views(
        image, "multi_crop", crop=3, resize=4, scales=[4]
    ).numpy()
    assert views.shape == (36, 3, 3, 3)
    expected = []
    for x in (0, 1, 2):
        square = image[:, x : x + 4]
        resized = tf.image.resize(square, (3, 3), antialias=True).numpy()
        expected.append(
            np.concatenate([np_five_crops(square, 3), resized[None]])
        )
    expected = np.concatenate(expected)
    expected = np.concatenate([expected, expected[:, :, ::-1]])
    np.testing.assert_allclose(views, expected, atol=1e-3)


def test_resize_smaller_than_crop_message():
    with pytest.raises(ValueError, match="Received: resize=4"):
        pv.image_views(np.zeros((8, 8, 3)), "center", crop=6, resize=4)


def test_average_probabilities_numpy():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(3, 10, 5, 7))  # models, views, N, classes
    expected = np.zeros((5, 7))
    for m in range(3):
        for v in range(10):
            e = np.exp(logits[m, v])
            expected += e / e.sum(axis=1, keepdims=True)
    expected /= 30
    got = scoring.average_probabilities(logits)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-12)


def test_ensemble_average_differs_from_logit_average():
    # Softmax averaging (the papers) is not logit averaging.
    logits = np.array([[[[10.0, 0.0, 0.0]]], [[[0.0, 1.0, 1.2]]]])
    probs = scoring.average_probabilities(logits)
    assert probs[0].argmax() == 0
    assert scoring.softmax(logits.mean(axis=0))[0, 0].argmax() == 0
    assert not np.allclose(probs, scoring.softmax(logits.mean(axis=0))[0])


@pytest.mark.parametrize("k", [1, 2, 5])
def test_top_k_error_numpy(k):
    rng = np.random.default_rng(3)
    probs = rng.uniform(size=(200, 10))
    labels = rng.integers(0, 10, 200)
    top = np.argsort(-probs, axis=1)[:, :k]
    expected = 1.0 - np.mean([labels[i] in top[i] for i in range(200)])
    assert scoring.top_k_error(probs, labels, k) == pytest.approx(expected)


def test_top_k_error_hand_case():
    probs = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    labels = np.array([1, 2, 0])
    assert scoring.top_k_error(probs, labels, 1) == pytest.approx(2 / 3)
    assert scoring.top_k_error(probs, labels, 2) == pytest.approx(2 / 3)
    assert scoring.top_k_error(probs, labels, 3) == 0.0


def test_top_k_error_shape_message():
    with pytest.raises(ValueError, match="Received: probs.shape"):
        scoring.top_k_error(np.zeros((4, 3)), np.zeros(5), 1)


def _linear_model(seed, crop=4, classes=6):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((crop, crop, 3))
    x = keras.layers.Flatten()(inputs)
    outputs = keras.layers.Dense(classes)(x)
    return keras.Model(inputs, outputs)


def _np_logits(model, views):
    w, b = [v.numpy() for v in model.weights]
    return views.reshape(len(views), -1) @ w + b


def _tiny_dataset(n=7, shape=(6, 8, 3), classes=6, seed=4):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n,) + shape).astype(np.uint8)
    labels = rng.integers(0, classes, n).astype(np.int32)
    return tf.data.Dataset.from_tensor_slices((images, labels)), images, labels


def test_evaluate_ensemble_ten_crop_against_numpy():
    models = [_linear_model(0), _linear_model(1)]
    ds, images, labels = _tiny_dataset()
    result = predict.evaluate(models, ds, "ten_crop", resize=6, batch_size=3)
    # Chunking the crops of a batch (memory bound) changes nothing.
    chunked = predict.evaluate(
        models, ds, "ten_crop", resize=6, batch_size=3, max_crops=7
    )
    assert chunked == result
    probs = np.zeros((len(images), 6))
    for model in models:
        for i, image in enumerate(images):
            views = np_ten_crops(image.astype(np.float32), 4)
            probs[i] += scoring.softmax(_np_logits(model, views)).mean(axis=0)
    probs /= 2
    top = np.argsort(-probs, axis=1)
    top1 = 100 * np.mean(top[:, 0] != labels)
    top5 = 100 * np.mean([labels[i] not in top[i, :5] for i in range(7)])
    assert result["num_views"] == 10 and result["num_models"] == 2
    assert result["num_images"] == 7
    assert result["top1_error"] == pytest.approx(top1)
    assert result["top5_error"] == pytest.approx(top5)


def test_evaluate_scores_the_main_head_of_an_aux_model():
    """GoogLeNet trained with aux heads (Sec. 5) outputs a dict; the test
    protocols score `logits` only."""
    main = _linear_model(0)
    inputs = main.input
    aux = keras.layers.Dense(6)(keras.layers.Flatten()(inputs))
    with_aux = keras.Model(
        inputs, {"logits": main.output, "aux1": aux, "aux2": aux}
    )
    ds, _, _ = _tiny_dataset()
    expected = predict.evaluate([main], ds, "ten_crop", resize=6)
    assert predict.evaluate([with_aux], ds, "ten_crop", resize=6) == expected


def test_evaluate_rejects_mixed_input_sizes():
    ds, _, _ = _tiny_dataset()
    with pytest.raises(ValueError, match="same static input size"):
        predict.evaluate(
            [_linear_model(0, 4), _linear_model(0, 5)], ds, "center"
        )


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


def _softmax_errors(probs, labels):
    """Top-1 and top-5 error (%) of averaged probabilities, in numpy."""
    top = np.argsort(-probs, axis=1)
    top1 = 100 * np.mean(top[:, 0] != labels)
    top5 = 100 * np.mean([y not in row[:5] for y, row in zip(labels, top)])
    return top1, top5


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
    ds, images, labels = _tiny_dataset(n=9, shape=(10, 12, 1), classes=4)
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
    top1, top5 = _softmax_errors(probs, labels)
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
    with pytest.raises(ValueError, match="selects no trained run"):
        report_hook.evaluate_experiment(
            None,
            parent,
            [{"row": "x", "members": ["nope"], "protocol": "center"}],
            dataset=ds,
        )


def test_eval_dataset_gives_uncropped_normalised_images(tmp_path):
    data_cfg = {
        "_target_": "convnet_repro.experiments.data.make_datasets",
        "name": "synthetic",
        "batch_size": 8,
        "input_shape": [16, 16, 1],
        "num_classes": 4,
        "crop_size": 12,
        "num_val_examples": 10,
        "rescale": 1 / 255,
    }
    ds, _ = predict.eval_dataset(data_cfg)
    pairs = [(x.numpy(), int(y)) for x, y in ds]
    assert len(pairs) == 10 and pairs[0][0].shape == (16, 16, 1)
    images = np.stack([image for image, _ in pairs])
    # Exactly the generated validation images (split seed 2), rescaled by
    # 1/255 and neither resized nor cropped, in order, with their labels.
    from convnet_repro.experiments.data import synthetic

    raw, labels = synthetic.make_synthetic(10, (16, 16, 1), 4, seed=2)
    np.testing.assert_allclose(images, raw / 255, atol=1e-6)
    assert [label for _, label in pairs] == labels.tolist()


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

    top1, top5 = _softmax_errors(probs_of(models[0]), labels)
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
    top1, top5 = _softmax_errors(both, labels)
    assert combined["num_models"] == 2 and live["num_models"] == 2
    for result in (combined, live):
        assert result["top1_error"] == pytest.approx(top1, abs=1e-4)
        assert result["top5_error"] == pytest.approx(top5, abs=1e-4)
