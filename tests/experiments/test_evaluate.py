"""Tests for `experiments.evaluation`'s protocols and scoring: views,
averaging, top-k and the ensemble evaluation of in-memory models.

Every numerical check compares with a NumPy reference written straight from
the protocol definitions (Krizhevsky et al. 2012 Sec. 4.1 ten crops;
Szegedy et al. 2015 Sec. 7 multi-crop). Runs trained by the engine, their
MLflow I/O and the CLI are in `test_evaluate_mlflow.py` and
`test_evaluate_runs.py`.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from convnet_repro.experiments.data import protocol_views as pv
from convnet_repro.experiments.evaluation import predict
from convnet_repro.experiments.evaluation import scoring
from tests.experiments.evaluation_refs import linear_model
from tests.experiments.evaluation_refs import np_five_crops
from tests.experiments.evaluation_refs import np_logits
from tests.experiments.evaluation_refs import np_ten_crops
from tests.experiments.evaluation_refs import tiny_dataset


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


def test_evaluate_ensemble_ten_crop_against_numpy():
    models = [linear_model(0), linear_model(1)]
    ds, images, labels = tiny_dataset()
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
            probs[i] += scoring.softmax(np_logits(model, views)).mean(axis=0)
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
    main = linear_model(0)
    inputs = main.input
    aux = keras.layers.Dense(6)(keras.layers.Flatten()(inputs))
    with_aux = keras.Model(
        inputs, {"logits": main.output, "aux1": aux, "aux2": aux}
    )
    ds, _, _ = tiny_dataset()
    expected = predict.evaluate([main], ds, "ten_crop", resize=6)
    assert predict.evaluate([with_aux], ds, "ten_crop", resize=6) == expected


def test_evaluate_rejects_mixed_input_sizes():
    ds, _, _ = tiny_dataset()
    with pytest.raises(ValueError, match="same static input size"):
        predict.evaluate([linear_model(0, 4), linear_model(0, 5)], ds, "center")


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
