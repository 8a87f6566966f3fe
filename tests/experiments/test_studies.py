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

from experiments.studies import common

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
        f"tracking.tracking_uri=sqlite:///{tmp_path}/mlruns.db",
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
    from experiments.studies import edge_efficiency as ee

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
    from experiments.studies import edge_efficiency as ee

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


def test_edge_efficiency_run_writes_table(tmp_path):
    from experiments.studies import edge_efficiency as ee

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
