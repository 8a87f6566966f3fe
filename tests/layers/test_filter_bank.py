"""Classic filter bank: names, sizes and the Keras initializer."""

import keras
import numpy as np
import pytest

from convnet_repro.layers import FILTERS
from convnet_repro.layers import FilterBankInitializer
from convnet_repro.layers import cross_correlate
from convnet_repro.layers import get_filter


def test_names_and_classic_kernels():
    assert set(FILTERS) == {
        "average", "gaussian", "prewitt_h", "prewitt_v", "sobel_h",
        "sobel_v", "high_pass", "sharpen", "sharpen_low",
    }  # fmt: skip
    sobel_h = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]])
    np.testing.assert_array_equal(get_filter("sobel_h"), sobel_h)
    np.testing.assert_array_equal(get_filter("sobel_v"), sobel_h.T)
    np.testing.assert_array_equal(
        get_filter("prewitt_h"), [[1, 1, 1], [0, 0, 0], [-1, -1, -1]]
    )
    np.testing.assert_allclose(
        get_filter("gaussian"), np.outer([1, 2, 1], [1, 2, 1]) / 16
    )
    np.testing.assert_array_equal(
        get_filter("sharpen"), [[0, -1, 0], [-1, 5, -1], [0, -1, 0]]
    )


@pytest.mark.parametrize("size", [3, 5])
def test_sums_and_symmetries(size):
    names = [n for n in FILTERS if n != "sharpen" or size == 3]
    sums = {n: get_filter(n, size).sum() for n in names}
    for n in ("average", "gaussian", "sharpen_low") + (
        ("sharpen",) if size == 3 else ()
    ):
        assert sums[n] == pytest.approx(1.0, abs=1e-6)  # keep brightness
    for n in ("prewitt_h", "prewitt_v", "sobel_h", "sobel_v", "high_pass"):
        assert sums[n] == pytest.approx(0.0, abs=1e-5)  # flat image -> 0
    assert get_filter("gaussian", size).shape == (size, size)


def test_edge_filters_find_edges():
    """A vertical step edge: sobel_v responds, sobel_h does not."""
    image = np.zeros((8, 8))
    image[:, 4:] = 1.0
    v = keras.ops.convert_to_numpy(
        cross_correlate(image, get_filter("sobel_v"), "valid")
    )
    h = keras.ops.convert_to_numpy(
        cross_correlate(image, get_filter("sobel_h"), "valid")
    )
    assert np.all(h == 0) and np.abs(v).max() == 4.0
    assert set(np.nonzero(v)[1]) == {2, 3}  # the columns straddling the edge


def test_initializer_conv2d_and_depthwise():
    x = np.random.default_rng(0).standard_normal((1, 6, 6, 3)).astype("f4")
    init = FilterBankInitializer(["sobel_h", "average"])
    conv = keras.layers.Conv2D(2, 3, use_bias=False, kernel_initializer=init)
    y = keras.ops.convert_to_numpy(conv(x))
    grey = x[0].mean(axis=-1)
    for j, name in enumerate(["sobel_h", "average"]):
        expected = cross_correlate(grey, get_filter(name), "valid")
        np.testing.assert_allclose(y[0, :, :, j], expected, atol=1e-5)
    dw = keras.layers.DepthwiseConv2D(
        3,
        depth_multiplier=2,
        use_bias=False,
        depthwise_initializer=FilterBankInitializer(
            ["gaussian", "sobel_v"], depthwise=True
        ),
    )
    y = keras.ops.convert_to_numpy(dw(x))  # channel c*2 + j
    for c in range(3):
        for j, name in enumerate(["gaussian", "sobel_v"]):
            expected = cross_correlate(x[0, :, :, c], get_filter(name), "valid")
            np.testing.assert_allclose(
                y[0, :, :, 2 * c + j], expected, atol=1e-5
            )


def test_initializer_serializes():
    init = FilterBankInitializer(["sobel_h", "sharpen"], depthwise=True)
    revived = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(init)
    )
    assert isinstance(revived, FilterBankInitializer)
    assert revived.get_config() == init.get_config()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: get_filter("laplace"), "Unknown filter"),
        (lambda: get_filter("average", 4), "odd"),
        (lambda: get_filter("sharpen", 5), "3x3"),
        (lambda: FilterBankInitializer("blur"), "Unknown filter"),
        (lambda: FilterBankInitializer([]), "at least one"),
        (lambda: FilterBankInitializer()((3, 5, 1, 1)), "square"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=f"(?s){match}.*Received"):
        call()
