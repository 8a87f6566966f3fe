"""convolve / cross_correlate / smooth_positions (DL book Sec. 9.1-9.2).

The strided-convolution gradients of eq. 9.11-9.13 are checked on our
layer in test_tiled_conv2d.py."""

import keras
import numpy as np
import pytest

from convnet_repro.layers import convolve
from convnet_repro.layers import cross_correlate
from convnet_repro.layers import smooth_positions
from tests.layers import references as ref

RNG = np.random.default_rng(0)


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _crop(full, n, k, mode):
    """numpy/scipy mode crops of a full-mode result (1 axis)."""
    if mode == "full":
        return full
    if mode == "valid":
        return full[k - 1 : n]
    start = (k - 1) // 2
    return full[start : start + n]


@pytest.mark.parametrize("mode", ["full", "valid", "same"])
@pytest.mark.parametrize("k", [3, 4])
def test_convolve_1d_matches_eq_9_3(mode, k):
    x, w = RNG.standard_normal(9), RNG.standard_normal(k)
    expected = _crop(ref.convolve_1d(x, w), 9, k, mode)
    np.testing.assert_allclose(_np(convolve(x, w, mode)), expected, atol=1e-5)
    np.testing.assert_allclose(expected, np.convolve(x, w, mode), atol=1e-12)


@pytest.mark.parametrize("mode", ["full", "valid", "same"])
def test_2d_match_eq_9_4_and_9_6(mode):
    image, kernel = RNG.standard_normal((6, 7)), RNG.standard_normal((3, 4))
    conv_full = ref.convolve_2d(image, kernel)
    corr_full = ref.cross_correlate_2d(image, kernel)
    for fn, full in ((convolve, conv_full), (cross_correlate, corr_full)):
        expected = _crop(_crop(full, 6, 3, mode).T, 7, 4, mode).T
        np.testing.assert_allclose(
            _np(fn(image, kernel, mode)), expected, atol=1e-5
        )


def test_cross_correlation_is_convolution_with_flipped_kernel():
    image, kernel = RNG.standard_normal((5, 6)), RNG.standard_normal((3, 3))
    np.testing.assert_allclose(
        _np(cross_correlate(image, kernel, "full")),
        _np(convolve(image, kernel[::-1, ::-1], "full")),
        atol=1e-5,
    )
    assert not np.allclose(
        _np(cross_correlate(image, kernel, "full")),
        _np(convolve(image, kernel, "full")),
    )


@pytest.mark.parametrize("shape_a, shape_b", [((7,), (3,)), ((5, 6), (3, 2))])
def test_convolution_commutative_full(shape_a, shape_b):
    a, b = RNG.standard_normal(shape_a), RNG.standard_normal(shape_b)
    np.testing.assert_allclose(
        _np(convolve(a, b, "full")), _np(convolve(b, a, "full")), atol=1e-5
    )
    np.testing.assert_allclose(
        _np(convolve(a, b, "valid")), _np(convolve(b, a, "valid")), atol=1e-5
    )


@pytest.mark.parametrize(
    "shapes", [((8,), (3,), (4,)), ((5, 6), (3, 2), (2, 3))]
)
def test_convolution_associative_cross_correlation_not(shapes):
    a, b, c = (RNG.standard_normal(s) for s in shapes)
    left = convolve(convolve(a, b, "full"), c, "full")
    right = convolve(a, convolve(b, c, "full"), "full")
    np.testing.assert_allclose(_np(left), _np(right), atol=1e-4)
    left = cross_correlate(cross_correlate(a, b, "full"), c, "full")
    right = cross_correlate(a, cross_correlate(b, c, "full"), "full")
    assert left.shape == right.shape
    assert not np.allclose(_np(left), _np(right), atol=1e-2)


def test_smooth_positions_is_the_weighted_average():
    x = RNG.standard_normal(20) + np.linspace(0, 5, 20)
    w = np.array([0.5, 0.3, 0.2])
    s = _np(smooth_positions(x, w))
    for t in range(20):
        expected = sum(x[a] * w[t - a] for a in range(t + 1) if t - a < 3)
        assert s[t] == pytest.approx(expected, abs=1e-5)
    # A noiseless constant-velocity track: the estimate lags by E[age].
    track = np.arange(30.0)
    lag = np.sum(np.arange(3) * w)
    np.testing.assert_allclose(
        _np(smooth_positions(track, w))[5:], track[5:] - lag, atol=1e-4
    )
    # Smoothing reduces the noise of a stationary target.
    noisy = RNG.standard_normal(500)
    assert np.std(_np(smooth_positions(noisy))[10:]) < 0.8 * np.std(noisy)


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: convolve(np.ones((2, 2, 2)), np.ones((2, 2, 2))),
            "1-D and 2-D",
        ),
        (lambda: convolve(np.ones(4), np.ones(2), "circular"), "mode"),
        (
            lambda: cross_correlate(np.ones(4), np.ones((2, 2))),
            "1-D kernel",
        ),
        (lambda: cross_correlate(np.ones(2), np.ones(4)), "no larger"),
        (lambda: smooth_positions(np.ones(5), [0.5, 0.6]), "density"),
        (lambda: smooth_positions(np.ones((5, 2))), "1-D"),
    ],
)
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=f"(?s)({match}).*Received"):
        call()
