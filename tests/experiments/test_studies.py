"""Smoke tests of the concept studies (experiments/studies/), tiny settings.

Each test composes the study's Hydra config with small overrides, runs
`run(cfg)` into a temporary folder and checks the table's columns plus the
property the study demonstrates, against numpy written from the formulas.
"""

import numpy as np
import pytest

from convnet_repro.experiments.studies import common
from tests.helpers import STUDY_CONF_DIR
from tests.helpers import compose_study
from tests.helpers import needs_imagenette
from tests.helpers import needs_mnist
from tests.layers.references import convolve_2d

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


def test_conv_vs_correlation_matches_numpy_formula():
    from convnet_repro.experiments.studies import conv_vs_correlation as cvc
    from convnet_repro.layers import filter_bank

    rng = np.random.default_rng(0)
    img = rng.random((6, 7))
    k = filter_bank.get_filter("sobel_h", 3).astype(np.float64)
    np.testing.assert_allclose(
        cvc.conv(img, k, "full"), convolve_2d(img, k), atol=1e-5
    )
    np.testing.assert_allclose(
        cvc.corr(img, k, "full"),
        convolve_2d(img, k[::-1, ::-1]),
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
        cwd=STUDY_CONF_DIR.parents[1],
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
