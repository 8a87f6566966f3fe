"""Smoke tests of the output studies (experiments/studies/): structured
output and first-layer filters, tiny settings.

As in test_studies.py: each test composes the study's Hydra config, runs it
into a temporary folder and checks the property the study demonstrates.
"""

import numpy as np
import pytest

from convnet_repro.experiments.studies import common
from tests.helpers import compose_study
from tests.helpers import needs_imagenette
from tests.helpers import needs_mnist


@needs_mnist
def test_structured_output_composite_labels():
    from convnet_repro.experiments.studies import structured_output as so

    images, labels = common.load_mnist("test", 50)
    x, y = so.make_composites(images, labels, 8, 56, (2, 3), 0, 0.5)
    assert x.shape == (8, 56, 56, 1) and y.shape == (8, 56, 56)
    assert set(np.unique(y)) <= set(range(11)) and y.max() > 0
    # Labelled pixels are bright; bright pixels are labelled.
    assert np.all(x[..., 0][y > 0] > 0.5)
    assert np.all(y[x[..., 0] > 0.5] > 0)
    # Every composite holds 2 or 3 labelled digit regions' classes.
    assert all(1 <= len(set(np.unique(m)) - {0}) <= 3 for m in y)


def test_structured_output_metrics_match_hand_count():
    from convnet_repro.experiments.studies import structured_output as so

    t = np.array([0, 0, 1, 1, 2])
    p = np.array([0, 1, 1, 1, 0])
    m = so.segmentation_metrics(t, p, num_classes=3)
    assert m["pixel_accuracy"] == 3 / 5
    assert m["foreground_accuracy"] == 2 / 3
    # IoU: class0 1/3, class1 2/3, class2 0/1.
    np.testing.assert_allclose(m["iou"], [1 / 3, 2 / 3, 0.0])
    assert np.isclose(m["mean_iou"], 1 / 3)


@needs_mnist
def test_structured_output_run(tmp_path):
    from convnet_repro.experiments.studies import structured_output as so

    cfg = compose_study(
        "structured_output",
        tmp_path,
        "n_train_digits=200",
        "n_test_digits=100",
        "n_train=32",
        "n_test=8",
        "steps=1",
        "filters=[4,4,8]",
    )
    result = so.run(cfg)
    assert len(result["rows"]) == so.NUM_CLASSES
    assert set(result["rows"][0]) == {"class", "test pixels", "IoU"}
    # The per-class pixel counts are those of the test composites, made
    # again here from the same MNIST digits and seed (cfg.seed + 1).
    xte, yte = common.load_mnist("test", 100)
    _, y_test = so.make_composites(
        xte, yte, 8, 56, (2, 3), cfg.seed + 1, cfg.threshold
    )
    support = np.bincount(y_test.ravel(), minlength=so.NUM_CLASSES)
    assert [r["test pixels"] for r in result["rows"]] == support.tolist()
    # Mean IoU averages the classes present (NaN IoU = absent everywhere).
    ious = [r["IoU"] for r in result["rows"]]
    assert result["metrics"]["mean_iou"] == pytest.approx(np.nanmean(ious))
    assert np.isnan(ious).sum() < so.NUM_CLASSES - 1
    assert (tmp_path / "structured_output.png").exists()


# ----------------------------------------------------- first_layer_filters


def test_low_frequency_fraction_extremes():
    from convnet_repro.experiments.studies import first_layer_filters as flf

    i, j = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    smooth = np.cos(2 * np.pi * i / 8)  # lowest non-DC frequency
    checker = (-1.0) ** (i + j)  # highest frequency
    k = np.stack([smooth, checker], -1)[:, :, None, :]
    frac = flf.low_frequency_fraction(k)
    np.testing.assert_allclose(frac, [1.0, 0.0], atol=1e-12)


@needs_imagenette
def test_first_layer_filters_run(tmp_path):
    from convnet_repro.experiments.studies import first_layer_filters as flf

    cfg = compose_study(
        "first_layer_filters",
        tmp_path,
        "train_per_class=3",
        "val_per_class=1",
        "size=32",
        "steps=1",
        "filters=8",
    )
    result = flf.run(cfg)
    assert result["trained"].shape == (7, 7, 3, 8)
    assert not np.allclose(result["trained"], result["init"])
    assert [r["filters"] for r in result["rows"]] == ["random init", "trained"]
    assert (tmp_path / "first_layer_filters.png").exists()


# ------------------------------------------------------------ entry points
