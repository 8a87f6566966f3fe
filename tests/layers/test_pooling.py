"""LpPooling2D, WeightedAveragePooling2D, QuadrantPooling2D (DL book 9.3)."""

import keras
import numpy as np
import pytest

from convnet_repro.layers import LpPooling2D
from convnet_repro.layers import QuadrantPooling2D
from convnet_repro.layers import WeightedAveragePooling2D
from tests.helpers import check_layer
from tests.helpers import gradients

RNG = np.random.default_rng(0)


def _windows(x, k, s):
    """(B, oh, ow, k*k, C) valid windows of x (B, H, W, C)."""
    b, h, w, c = x.shape
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    out = np.zeros((b, oh, ow, k * k, c))
    for i in range(oh):
        for j in range(ow):
            patch = x[:, i * s : i * s + k, j * s : j * s + k]
            out[:, i, j] = patch.reshape(b, k * k, c)
    return out


@pytest.mark.parametrize(
    "cls, kwargs, input_shape, output_shape",
    [
        (LpPooling2D, {"p": 3, "pool_size": 3, "strides": 2}, (2, 9, 9, 3),
         (2, 4, 4, 3)),
        (WeightedAveragePooling2D, {"pool_size": 3, "strides": 2,
         "sigma": 0.8}, (2, 7, 7, 2), (2, 3, 3, 2)),
        (QuadrantPooling2D, {"levels": (2,), "mode": "avg"}, (2, 6, 6, 4),
         (2, 16)),
    ],
)  # fmt: skip
def test_basics(cls, kwargs, input_shape, output_shape, tmp_path):
    check_layer(
        cls,
        kwargs,
        input_shape=input_shape,
        expected_output_shape=output_shape,
        expected_num_weights=0,
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize("p", [1.0, 2.0, 3.5])
def test_lp_is_the_power_mean(p):
    x = RNG.standard_normal((2, 7, 7, 3)).astype("float32")
    y = LpPooling2D(p, pool_size=3, strides=2)(x)
    expected = np.mean(np.abs(_windows(x, 3, 2)) ** p, axis=3) ** (1 / p)
    np.testing.assert_allclose(y, expected, rtol=1e-5)


def test_lp_limits():
    x = RNG.standard_normal((2, 8, 8, 3)).astype("float32")
    w = np.abs(_windows(x, 2, 2))
    # p = 1: mean |x|, i.e. average pooling of |x|.
    np.testing.assert_allclose(LpPooling2D(1)(x), w.mean(axis=3), rtol=1e-6)
    avg = keras.layers.AveragePooling2D(2)(np.abs(x))
    np.testing.assert_allclose(LpPooling2D(1)(x), avg, rtol=1e-6)
    # p -> inf: max |x|; the power mean increases with p towards it.
    np.testing.assert_allclose(LpPooling2D("inf")(x), w.max(axis=3))
    previous = w.mean(axis=3)
    for p in (2, 8, 32, 64):
        y = keras.ops.convert_to_numpy(LpPooling2D(p)(x))
        assert np.all(y >= previous - 1e-5)
        previous = y
    # mean^(1/p) >= (1/4)^(1/64) * max for 4 values.
    assert np.all(previous >= 0.97 * w.max(axis=3))


def test_lp_zero_windows_have_finite_gradients():
    layer = LpPooling2D(2)
    y, (grad,) = gradients(
        lambda x: keras.ops.sum(layer(x)), np.zeros((1, 4, 4, 1), "float32")
    )
    assert float(y) == 0.0
    assert np.all(np.isfinite(grad))


def test_weighted_average_matches_formula():
    x = np.random.default_rng(0).standard_normal((2, 7, 7, 2)).astype("float32")
    y = WeightedAveragePooling2D(pool_size=3, strides=2, sigma=0.8)(x)
    d2 = np.add.outer((np.arange(3) - 1.0) ** 2, (np.arange(3) - 1.0) ** 2)
    w = np.exp(-d2 / (2 * 0.8**2)).reshape(9)
    w /= w.sum()
    expected = np.einsum("bijkc,k->bijc", _windows(x, 3, 2), w)
    np.testing.assert_allclose(y, expected, atol=1e-5)
    assert w[4] == w.max()  # the centre pixel weighs most


def test_weighted_average_same_keeps_constants():
    x = np.full((1, 5, 6, 2), 3.0, "float32")
    for weighting in ("gaussian", "linear"):
        layer = WeightedAveragePooling2D(3, 1, "same", weighting=weighting)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(layer(x)), x, rtol=1e-6
        )


def _adaptive_reference(x, level, reduce):
    b, h, w, c = x.shape
    out = np.zeros((b, level, level, c))
    for i in range(level):
        r0, r1 = (i * h) // level, -(-((i + 1) * h) // level)
        for j in range(level):
            c0, c1 = (j * w) // level, -(-((j + 1) * w) // level)
            out[:, i, j] = reduce(x[:, r0:r1, c0:c1], axis=(1, 2))
    return out.reshape(b, -1)


@pytest.mark.parametrize("mode, reduce", [("max", np.max), ("avg", np.mean)])
def test_quadrant_pooling_any_size(mode, reduce):
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, QuadrantPooling2D((1, 2, 3), mode)(inputs))
    for h, w in ((4, 4), (7, 5), (2, 9), (13, 11)):
        x = np.random.default_rng(h).standard_normal((2, h, w, 3)).astype("f4")
        y = keras.ops.convert_to_numpy(model(x))
        assert y.shape == (2, 3 * (1 + 4 + 9))
        expected = np.concatenate(
            [_adaptive_reference(x, lv, reduce) for lv in (1, 2, 3)], axis=1
        )
        np.testing.assert_allclose(y, expected, atol=1e-6)


def test_quadrant_pooling_is_invariant_to_shifts_inside_a_cell():
    """DL book Sec. 9.3: pooling over regions makes the output invariant to
    where a feature sits inside each region. A blob moved within its 4x4
    quadrant leaves QuadrantPooling2D's max output unchanged; moved into
    the next quadrant, only the level-1 (global) cell stays the same."""
    blob = RNG.uniform(1.0, 2.0, (2, 2, 3)).astype("float32")

    def place(row, col):
        x = np.zeros((1, 8, 8, 3), "float32")
        x[0, row : row + 2, col : col + 2] = blob
        return keras.ops.convert_to_numpy(QuadrantPooling2D((1, 2))(x))

    start = place(0, 0)
    np.testing.assert_array_equal(place(2, 1), start)  # same quadrant
    moved = place(0, 4)  # top-right quadrant
    np.testing.assert_array_equal(moved[:, :3], start[:, :3])  # level 1
    assert not np.array_equal(moved[:, 3:], start[:, 3:])


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: LpPooling2D(0.5), "`p`"),
        (lambda: LpPooling2D("two"), "`p`"),
        (lambda: LpPooling2D(2, pool_size=0), "pool_size"),
        (lambda: WeightedAveragePooling2D(weighting="cosine"), "weighting"),
        (lambda: WeightedAveragePooling2D(sigma=0), "sigma"),
        (lambda: QuadrantPooling2D(levels=(0,)), "levels"),
        (lambda: QuadrantPooling2D(mode="median"), "mode"),
    ],
)
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=f"{match}.*Received"):
        make()
