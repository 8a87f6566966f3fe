"""Smoke tests of the invariance studies (experiments/studies/): shift
equivariance, parameter sharing and variable-size pooling, tiny settings.

As in test_studies.py: each test composes the study's Hydra config, runs it
into a temporary folder and checks the property the study demonstrates.
"""

import numpy as np
import pytest

from convnet_repro.experiments.studies import common
from tests.helpers import compose_study
from tests.helpers import needs_imagenette
from tests.helpers import needs_mnist


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
