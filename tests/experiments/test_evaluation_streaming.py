"""Streaming evaluation: memory that does not grow with the number of
images, per-image predictions on disk and their chunked combination."""

import os
import tracemalloc

import numpy as np
import pytest

from convnet_repro.experiments.evaluation import predict
from convnet_repro.experiments.evaluation import scoring
from convnet_repro.experiments.evaluation import store
from convnet_repro.experiments.reports import imagenet_stats
from tests.experiments.evaluation_refs import linear_model
from tests.experiments.evaluation_refs import np_logits
from tests.experiments.evaluation_refs import np_ten_crops
from tests.experiments.evaluation_refs import tiny_dataset


def _evaluate_peak_bytes(model, n):
    """Peak Python/NumPy allocation (tracemalloc) while scoring `n` images."""
    ds, _, _ = tiny_dataset(n=n, classes=1000)
    predict.evaluate([model], ds.take(4), "ten_crop", resize=6)  # warm up
    tracemalloc.start()
    result = predict.evaluate([model], ds, "ten_crop", resize=6, batch_size=4)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert result["num_images"] == n
    return peak


def test_memory_does_not_grow_with_the_number_of_images():
    """The old evaluation kept (views, N, classes) logits plus a float64
    softmax of them: 10 x 160 x 1000 x 12 bytes = 19 MB at 4N here, 4x the
    N figure. Streaming keeps one batch, whatever N."""
    model = linear_model(0, classes=1000)
    small = _evaluate_peak_bytes(model, 40)
    large = _evaluate_peak_bytes(model, 160)
    assert large < 1.2 * small + 200_000, (small, large)
    # What one image's logits would cost if kept: the growth must be far
    # below it (old: 10 views x 1000 classes x 12 bytes per image).
    assert (large - small) / 120 < 10 * 1000 * 12 / 10


def test_prediction_writer_round_trip_and_chunked_combine(tmp_path):
    rng = np.random.default_rng(5)
    members = [scoring.softmax(rng.normal(size=(50, 7))) for _ in range(3)]
    labels = rng.integers(0, 7, 50)
    folders = []
    for i, probs in enumerate(members):
        writer = store.PredictionWriter(tmp_path / f"m{i}", "float32")
        for start in range(0, 50, 8):  # batches of unknown total length
            writer.append(probs[start : start + 8], labels[start : start + 8])
        folders.append(writer.close())
    np.testing.assert_array_equal(
        np.load(tmp_path / "m0" / store.LABELS), labels
    )
    np.testing.assert_allclose(
        np.load(tmp_path / "m1" / store.PROBABILITIES), members[1], rtol=1e-6
    )
    out = store.PredictionWriter(tmp_path / "mean", "float16")
    counter = store.combine(folders, scoring.TopKCounter(), out, rows=6)
    out.close()
    mean = np.mean(members, axis=0)
    assert counter.result()["top1_error"] == pytest.approx(
        100 * scoring.top_k_error(mean, labels, 1)
    )
    assert counter.result()["top5_error"] == pytest.approx(
        100 * scoring.top_k_error(mean, labels, 5)
    )
    stored = np.load(tmp_path / "mean" / store.PROBABILITIES)
    assert stored.dtype == np.float16
    np.testing.assert_allclose(stored, mean, atol=1e-3)
    # Members scored on different images are refused.
    short = store.PredictionWriter(tmp_path / "short")
    short.append(members[0][:10], labels[:10])
    with pytest.raises(ValueError, match="different images"):
        store.combine(folders + [short.close()], scoring.TopKCounter())


def test_stored_hits_count_what_the_row_error_counted(tmp_path):
    # Label 1 loses to class 0 by less than float16 resolution: a miss in
    # float32 (what the row's error counts), a tie once stored as float16.
    probs = np.array([[0.33335, 0.33330, 0.33330]] * 3 + [[0.1, 0.8, 0.1]])
    labels = np.array([1, 1, 1, 1])
    assert np.float16(probs[0, 0]) == np.float16(probs[0, 1])
    writer = store.PredictionWriter(tmp_path / "row", "float16")
    counter = scoring.TopKCounter(ks=(1, 5))
    counter.update(probs, labels)
    writer.append(probs, labels)
    folder = writer.close()
    assert counter.result()["top1_error"] == 75.0
    stored = imagenet_stats.folder_predictions(folder)
    row = imagenet_stats.Correctness(lambda rid: stored).get("row")
    assert 100 * row["top1_error"].mean() == counter.result()["top1_error"]
    assert row["classes"] == 3 and row["labels"].tolist() == [1, 1, 1, 1]
    # Re-ranking the float16 probabilities (folders logged before the hits
    # were stored) counts the ties as hits: 0% instead of 75%.
    os.remove(os.path.join(folder, store.HITS))
    old = imagenet_stats.Correctness(
        lambda rid: imagenet_stats.folder_predictions(folder)
    ).get("row")
    assert old["top1_error"].mean() == 0.0


def test_top_k_hits_is_the_counters_rule():
    rng = np.random.default_rng(3)
    probs = rng.integers(0, 4, size=(200, 10)).astype(np.float32)  # ties
    labels = rng.integers(0, 10, 200)
    hits = scoring.top_k_hits(probs, labels)
    counter = scoring.TopKCounter()
    counter.update(probs, labels)
    for column, k in enumerate(scoring.TOP_K):
        assert 100 * (1 - hits[:, column].mean()) == pytest.approx(
            counter.result()[f"top{k}_error"]
        )
    by_hand = (probs > probs[np.arange(200), labels][:, None]).sum(1) < 5
    np.testing.assert_array_equal(hits[:, 1], by_hand)


def test_evaluate_streams_the_ensemble_probabilities(tmp_path):
    models = [linear_model(0), linear_model(1)]
    ds, images, labels = tiny_dataset()
    writer = store.PredictionWriter(tmp_path, "float32")
    predict.evaluate(models, ds, "ten_crop", resize=6, writer=writer)
    writer.close()
    expected = np.zeros((len(images), 6))
    for model in models:
        for i, image in enumerate(images):
            views = np_ten_crops(image.astype(np.float32), 4)
            expected[i] += scoring.softmax(np_logits(model, views)).mean(0)
    np.testing.assert_allclose(
        np.load(tmp_path / store.PROBABILITIES), expected / 2, atol=1e-5
    )
    np.testing.assert_array_equal(np.load(tmp_path / store.LABELS), labels)


def test_a_batch_holds_at_most_max_crops_views():
    model = linear_model(0)
    ds, _, _ = tiny_dataset(n=7)
    batches = list(
        predict.batch_probabilities(
            [model], ds, "ten_crop", resize=6, batch_size=32, max_crops=25
        )
    )
    # 25 // 10 = 2 images (20 views) per batch: 4 batches for 7 images.
    assert [len(labels) for _, labels in batches] == [2, 2, 2, 1]
    assert all(p.shape == (1, len(lab), 6) for p, lab in batches)
