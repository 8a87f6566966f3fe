"""Smoke tests of the concept studies (experiments/studies/), tiny settings.

Each test composes the study's Hydra config with small overrides, runs
`run(cfg)` into a temporary folder and checks the table's columns plus the
property the study demonstrates, against numpy written from the formulas.
"""

import pathlib

import numpy as np
import pytest
from hydra import compose
from hydra import initialize_config_dir

from convnet_repro.experiments.studies import common
from tests.helpers import needs_imagenette
from tests.helpers import needs_mnist

CONF_DIR = pathlib.Path(__file__).resolve().parents[2] / "conf" / "study"


def compose_study(name, tmp_path, *overrides):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(
            name,
            overrides=[
                f"out_dir={tmp_path}",
                "tracking.enabled=false",
                *overrides,
            ],
        )


# ---------------------------------------------------------------- helpers


def test_markdown_table_formats_rows():
    table = common.markdown_table(
        [{"a": 1234, "b": 0.5, "c": "x"}], ["a", "b", "c"]
    )
    assert table.splitlines() == [
        "| a | b | c |",
        "|---|---|---|",
        "| 1,234 | 0.5 | x |",
    ]


@needs_mnist
def test_load_mnist_reads_real_idx():
    x, y = common.load_mnist("test", limit=10)
    assert x.shape == (10, 28, 28) and x.dtype == np.uint8
    assert y.tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # PROVENANCE.md
    with pytest.raises(ValueError, match="Received: split="):
        common.load_mnist("valid")


def test_tracked_run_logs_to_a_temporary_store(tmp_path):
    import mlflow

    cfg = compose_study(
        "edge_efficiency",
        tmp_path,
        "tracking.enabled=true",
        f"tracking.uri=sqlite:///{tmp_path}/mlruns.db",
        f"tracking.artifact_location={tmp_path}/artifacts",
    )
    (tmp_path / "a.txt").write_text("hi")
    with common.tracked_run(cfg, "smoke") as log:
        log.metrics({"m": 1.5})
        log.artifacts([tmp_path / "a.txt"])
        run_id = log.run_id
    run = mlflow.get_run(run_id)
    assert run.data.metrics["m"] == 1.5
    assert run.data.tags["study"] == "smoke"


# --------------------------------------------------------- edge_efficiency


def test_edge_efficiency_counts_equal_the_books_formulas():
    from convnet_repro.experiments.studies import edge_efficiency as ee

    c = ee.analytic_counts(280, 320)
    assert c["conv_flops"] == 319 * 280 * 3 == 267_960
    assert c["dense_entries"] == 320 * 280 * 319 * 280 > 8e9
    assert c["dense_flops"] > 16e9
    assert round(c["flops_ratio"], -3) == 60_000
    assert c["sparse_entries"] == 2 * 319 * 280 == 178_640
    assert ee.sparse_matrix(280, 320).nnz == c["sparse_entries"]
    with pytest.raises(ValueError, match="Received: height="):
        ee.analytic_counts(3, 1)


def test_edge_efficiency_matrices_equal_the_convolution():
    from convnet_repro.experiments.studies import edge_efficiency as ee

    rng = np.random.default_rng(0)
    img = rng.normal(size=(5, 7)).astype(np.float32)
    ref = np.array(
        [[img[i, j + 1] - img[i, j] for j in range(6)] for i in range(5)]
    )
    np.testing.assert_allclose(ee.edge_conv(img), ref, atol=1e-6)
    np.testing.assert_allclose(
        ee.dense_matrix(5, 7) @ img.ravel(), ref.ravel(), atol=1e-6
    )
    np.testing.assert_allclose(
        ee.sparse_matrix(5, 7) @ img.ravel(), ref.ravel(), atol=1e-6
    )


@needs_imagenette
def test_edge_efficiency_run_writes_table(tmp_path):
    from convnet_repro.experiments.studies import edge_efficiency as ee

    cfg = compose_study(
        "edge_efficiency",
        tmp_path,
        "dense_sizes=[[14,16],[28,32]]",
        "repeats=1",
    )
    result = ee.run(cfg)
    assert set(result["timings"][0]) >= {
        "method",
        "stored entries",
        "flops",
        "seconds",
        "x conv time",
    }
    assert result["counts"][0]["ours"] == 267_960
    assert result["metrics"]["sparse_max_abs_error"] == 0.0
    assert (tmp_path / "edge_efficiency.md").exists()
    assert (tmp_path / "edge_efficiency.png").stat().st_size > 0


# ----------------------------------------------------- conv_vs_correlation


def _np_full_convolve(image, kernel):
    """Eq. 9.4 in full mode: S(i, j) = sum_{m,n} I(i - m, j - n) K(m, n)."""
    h, w = image.shape
    kh, kw = kernel.shape
    out = np.zeros((h + kh - 1, w + kw - 1))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            for m in range(kh):
                for n in range(kw):
                    if 0 <= i - m < h and 0 <= j - n < w:
                        out[i, j] += image[i - m, j - n] * kernel[m, n]
    return out


def test_conv_vs_correlation_matches_numpy_formula():
    from convnet_repro.experiments.studies import conv_vs_correlation as cvc
    from convnet_repro.layers import filter_bank

    rng = np.random.default_rng(0)
    img = rng.random((6, 7))
    k = filter_bank.get_filter("sobel_h", 3).astype(np.float64)
    np.testing.assert_allclose(
        cvc.conv(img, k, "full"), _np_full_convolve(img, k), atol=1e-5
    )
    np.testing.assert_allclose(
        cvc.corr(img, k, "full"),
        _np_full_convolve(img, k[::-1, ::-1]),
        atol=1e-5,
    )
    assert cvc.flip_relation(k) == "-K"
    assert cvc.flip_relation(np.arange(4.0).reshape(2, 2)) == "other"


@needs_imagenette
def test_conv_vs_correlation_run(tmp_path):
    from convnet_repro.experiments.studies import conv_vs_correlation as cvc

    cfg = compose_study("conv_vs_correlation", tmp_path, "crop=32")
    result = cvc.run(cfg)
    rows = {r["kernel"]: r for r in result["rows"]}
    assert list(result["rows"][0]) == cvc.COLUMNS
    for name in ("average", "gaussian", "high_pass", "sharpen"):
        assert rows[name]["flip(K)"] == "K"
        assert rows[name]["max |conv - corr|"] <= 1e-6
    for name in ("sobel_h", "sobel_v", "prewitt_h", "prewitt_v"):
        assert rows[name]["max |conv - corr|"] > 0.1
        assert rows[name]["max |conv + corr|"] <= 1e-5  # flip(K) = -K
    conv_assoc, _, corr_assoc, corr_rule = result["associativity"]
    assert conv_assoc["max |left - right|"] < 1e-4
    assert corr_assoc["relative"] > 0.5
    assert corr_rule["max |left - right|"] < 1e-4
    text = (tmp_path / "conv_vs_correlation.md").read_text()
    assert "max \\|conv - corr\\|" in text


# ------------------------------------------------------------ equivariance


def test_equivariance_shift_is_zero_filled():
    from convnet_repro.experiments.studies import equivariance as eq

    x = np.arange(12.0).reshape(1, 3, 4, 1)
    y = eq.shift(x, 1, 2)
    expected = np.zeros_like(x)
    for i in range(3):
        for j in range(4):
            if i >= 1 and j >= 2:
                expected[0, i, j, 0] = x[0, i - 1, j - 2, 0]
    np.testing.assert_array_equal(y, expected)
    with pytest.raises(ValueError, match="Received: dy="):
        eq.shift(x, -1, 0)


@needs_imagenette
def test_equivariance_run(tmp_path):
    from convnet_repro.experiments.studies import equivariance as eq

    cfg = compose_study(
        "equivariance",
        tmp_path,
        "num_images=2",
        "size=24",
        "filters=4",
        "max_shift=3",
        "pool_sizes=[1,3]",
        "kinds=[conv,tiled2,unshared]",
        "shifts_table=[[1,2],[2,2]]",
    )
    result = eq.run(cfg)
    assert list(result["rows"][0]) == eq.COLUMNS
    err = {
        (r["layer"], r["transform"]): r["rel. error (interior)"]
        for r in result["rows"]
    }
    whole = {
        (r["layer"], r["transform"]): r["rel. error (whole map)"]
        for r in result["rows"]
    }
    assert err["conv", "shift (1, 2)"] < 1e-5
    assert whole["conv", "shift (1, 2)"] > 1e-3  # the border differs
    assert err["unshared", "shift (2, 2)"] > 0.5
    assert err["tiled2", "shift (2, 2)"] < 1e-5  # multiple of t
    assert err["tiled2", "shift (1, 2)"] > 0.5
    assert whole["conv", "rotate 90 deg"] > 0.05
    assert whole["conv", "scale x2 (nearest)"] > 0.05
    pooling = result["pooling"]
    assert pooling[1][0] == pooling[3][0] == 1.0
    assert pooling[3][1] > pooling[1][1] + 0.1


# ------------------------------------------------------- parameter_sharing


def test_parameter_sharing_quadrant_canvas():
    from convnet_repro.experiments.studies import parameter_sharing as ps

    digits = np.arange(2 * 10 * 10, dtype=np.float32).reshape(2, 10, 10)
    x = ps.quadrant_canvas(digits, np.array([0, 3]), canvas=36)
    np.testing.assert_array_equal(x[0, 8:18, 8:18, 0], digits[0])
    np.testing.assert_array_equal(x[1, 18:28, 18:28, 0], digits[1])
    assert x[0].sum() == digits[0].sum() and x[1].sum() == digits[1].sum()
    with pytest.raises(ValueError, match="Received: canvas="):
        ps.quadrant_canvas(digits, np.array([0, 1]), canvas=20)


def test_parameter_sharing_conv_with_global_pool_cannot_see_quadrant():
    from convnet_repro.experiments.studies import parameter_sharing as ps

    rng = np.random.default_rng(0)
    digits = rng.random((4, 10, 10)).astype(np.float32)
    sens = {
        kind: ps.position_sensitivity(
            ps.build_net(kind, (36, 36, 1), 4), digits
        )
        for kind in ("conv", "unshared", "dense")
    }
    assert sens["conv"] < 1e-5  # exact invariance (8-pixel margins)
    assert sens["unshared"] > 1e-3
    assert sens["dense"] > 1e-3


@needs_mnist
def test_parameter_sharing_run(tmp_path):
    from convnet_repro.experiments.studies import parameter_sharing as ps

    cfg = compose_study(
        "parameter_sharing",
        tmp_path,
        "kinds=[unshared,conv]",
        "steps.mnist=2",
        "steps.quadrant=2",
        "n_train=128",
        "n_test=64",
        "n_sensitivity=4",
    )
    result = ps.run(cfg)
    rows = {(r["task"], r["layer"]): r for r in result["rows"]}
    assert list(result["rows"][0]) == ps.COLUMNS
    # conv: 5*5*1*8+8 + 3*3*8*16+16 + 16*10+10; unshared: per position
    # (24*24 and 10*10 output positions) kernels and biases.
    conv_params = (25 * 8 + 8) + (9 * 8 * 16 + 16) + (16 * 10 + 10)
    unshared_params = (
        24 * 24 * (25 * 8 + 8) + 10 * 10 * (9 * 8 * 16 + 16) + 16 * 10 + 10
    )
    assert rows["mnist", "conv"]["parameters"] == conv_params == 1546
    assert rows["mnist", "unshared"]["parameters"] == unshared_params
    assert rows["mnist", "conv"]["storage (bytes)"] == 4 * conv_params
    assert rows["quadrant", "conv"]["position sensitivity"] < 1e-5
    assert rows["quadrant", "unshared"]["position sensitivity"] > 1e-4
    assert (tmp_path / "parameter_sharing.md").exists()


# --------------------------------------------------- variable_size_pooling


def test_variable_size_pooling_net_takes_any_size():
    from convnet_repro.experiments.studies import variable_size_pooling as vsp

    model = vsp.build_net(filters=(4, 4, 8))
    for size in (16, 21, 40):
        x = np.zeros((2, size, size, 1), np.float32)
        assert tuple(model(x).shape) == (2, 10)


@needs_mnist
def test_variable_size_pooling_run(tmp_path):
    from convnet_repro.experiments.studies import variable_size_pooling as vsp

    cfg = compose_study(
        "variable_size_pooling",
        tmp_path,
        "n_train=128",
        "n_test=32",
        "steps=3",
        "train_sizes=[20,28]",
        "eval_sizes=[16,28]",
        "filters=[4,4,8]",
    )
    result = vsp.run(cfg)
    assert [r["size (px)"] for r in result["rows"]] == [16, 28]
    assert set(result["rows"][0]) == {
        "size (px)",
        "seen in mixed training",
        "acc mixed-size training",
        "acc 28-px training",
    }
    assert [r["seen in mixed training"] for r in result["rows"]] == [
        "no",
        "yes",
    ]
    # Each accuracy is a count of the 32 test digits, and the logged
    # metrics are the table's numbers.
    for r in result["rows"]:
        s = r["size (px)"]
        for column, name in (
            ("acc mixed-size training", "mixed"),
            ("acc 28-px training", "fixed28"),
        ):
            correct = r[column] * 32
            assert correct == round(correct), (s, column)
            assert result["metrics"][f"acc_{name}_{s}px"] == r[column]
    # The 28-px model evaluated at 28 px, recomputed here from MNIST with
    # the study's own training: the table reports that model's accuracy.
    import keras

    xtr, ytr = common.load_mnist("train", 128)
    xte, yte = common.load_mnist("test", 32)
    model = vsp.train_model(xtr, ytr, [28], cfg, cfg.seed)
    logits = keras.ops.convert_to_numpy(model(xte[..., None] / 255.0))
    expected = np.mean(np.argmax(logits, -1) == yte)
    assert result["rows"][1]["acc 28-px training"] == pytest.approx(expected)


# ------------------------------------------------------- structured_output


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


def test_every_study_composes_and_has_a_run(tmp_path):
    """Each listed study's config composes (schema and interpolations
    resolved) and its module has the `run(cfg)` the entry point calls."""
    import importlib

    from omegaconf import OmegaConf

    from convnet_repro.experiments import studies

    for name in studies.STUDIES:
        cfg = compose_study(name, tmp_path)
        OmegaConf.resolve(cfg)
        assert cfg.out_dir == str(tmp_path), name
        module = importlib.import_module(
            f"convnet_repro.experiments.studies.{name}"
        )
        assert callable(module.run), name


@pytest.mark.slow
@needs_imagenette
def test_study_entry_point_logs_an_mlflow_run(tmp_path):
    import os
    import subprocess
    import sys

    import mlflow

    uri = f"sqlite:///{tmp_path}/mlruns.db"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "convnet_repro.experiments.studies.edge_efficiency",
            f"out_dir={tmp_path}/out",
            f"tracking.uri={uri}",
            f"tracking.artifact_location={tmp_path}/artifacts",
            "dense_sizes=[[14,16],[28,32]]",
            "repeats=1",
            f"hydra.run.dir={tmp_path}/hydra",
        ],
        check=True,
        cwd=CONF_DIR.parents[1],
        env={**os.environ, "KERAS_BACKEND": "tensorflow"},
    )
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["study-edge_efficiency"])
    assert len(runs) == 1
    assert runs["metrics.conv_flops"][0] == 267_960
    artifacts = mlflow.artifacts.list_artifacts(run_id=runs["run_id"][0])
    assert {"edge_efficiency.md", "edge_efficiency.png"} <= {
        a.path for a in artifacts
    }
