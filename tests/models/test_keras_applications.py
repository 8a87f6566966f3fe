"""keras.applications weights in our builders (models.keras_applications).

The same raw images go through both conventions: the reference gets
`keras.applications.resnet.preprocess_input` (caffe: BGR, 0-255, minus the
BGR mean), ours gets our pipeline's `(pixels * rescale - mean) / std`.
The reference weights are random (`weights=None`) and then every BN
statistic and conv bias is randomised too, so that the bias and epsilon
folds are exercised (Keras initialises them to 0/1).
"""

import keras
import numpy as np
import pytest

from convnet_repro.models import keras_applications as ka

SIZE = 64  # ResNets are fully convolutional: small images, same weights


def randomize(model, seed=0):
    """Random BN statistics/gammas/betas and conv/dense biases."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = (w.shape for w in weights)
            weights = [
                rng.uniform(0.5, 1.5, g),
                rng.normal(0, 0.1, b),
                rng.normal(0, 0.1, m),
                rng.uniform(0.5, 1.5, v),
            ]
        else:
            weights = [weights[0]] + [
                rng.normal(0, 0.1, w.shape) for w in weights[1:]
            ]
        layer.set_weights([w.astype("float32") for w in weights])
    return model


def raw_images(size, n=2, seed=1):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (n, size, size, 3)).astype("float32")


def ours_input(raw, rescale=1 / 255, std=None):
    # The pipeline's rule: list mean/std are 0-255 units, times rescale.
    mean = np.asarray(ka.keras_data_settings(rescale)["mean"], "float32")
    x = (raw - mean) * rescale
    return x if std is None else x / (np.asarray(std, "float32") * rescale)


def reference_input(raw):
    return keras.applications.resnet.preprocess_input(raw.copy())


def assert_logits_close(got, expected):
    scale = float(np.abs(expected).max())
    assert scale > 1e-3  # the random network did not collapse
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * scale)


def layer_output(model, name, x):
    return np.asarray(keras.Model(model.input, model.get_layer(name).output)(x))


@pytest.fixture(scope="module")
def resnet50_reference():
    return randomize(
        ka.build_reference("resnet50", None, 1000, (SIZE,) * 2 + (3,))
    )


def test_resnet50_from_weights_file_matches_reference(
    resnet50_reference, tmp_path
):
    path = tmp_path / "resnet50.weights.h5"
    resnet50_reference.save_weights(path)
    ours = ka.build_with_keras_weights(
        "resnet50", weights=path, input_shape=(SIZE, SIZE, 3)
    )
    raw = raw_images(SIZE)
    x, xr = ours_input(raw), reference_input(raw)
    # conv1 is where TF "same" padding used to shift every map by a pixel.
    np.testing.assert_allclose(
        layer_output(ours, "conv1_bn", x),
        layer_output(resnet50_reference, "conv1_bn", xr),
        rtol=1e-4,
        atol=1e-4,
    )
    assert_logits_close(np.asarray(ours(x)), np.asarray(resnet50_reference(xr)))
    assert ours.name == "resnet50_keras"


def test_rescale_and_std_fold_into_conv1(resnet50_reference):
    # AlexNet-style raw 0-255 pixels (rescale 1) divided by a std.
    std = [58.4, 57.1, 57.4]
    ours = ka.build_resnet(
        "resnet50", input_shape=(SIZE, SIZE, 3), num_classes=1000
    )
    ka.transfer_weights(resnet50_reference, ours, "conv1_conv", 1.0, None, std)
    raw = raw_images(SIZE, seed=2)
    assert_logits_close(
        np.asarray(ours(ours_input(raw, 1.0, std))),
        np.asarray(resnet50_reference(reference_input(raw))),
    )


def test_wrong_mean_and_arguments_refused(tmp_path):
    with pytest.raises(ValueError, match=r"set data\.mean=\[123\.68, "):
        ka.build_with_keras_weights("vgg16", mean=[123.675, 116.28, 103.53])
    with pytest.raises(ValueError, match="Received: arch='resnet18'"):
        ka.build_with_keras_weights("resnet18")
    with pytest.raises(FileNotFoundError, match="Received: weights="):
        ka.build_with_keras_weights("resnet50", weights=tmp_path / "no.h5")
    with pytest.raises(ValueError, match="Received: rescale"):
        ka.build_with_keras_weights("resnet50", rescale=0)


def test_missing_counterpart_is_an_error(resnet50_reference):
    ours = ka.build_resnet(
        "resnet50", input_shape=(SIZE, SIZE, 3), shortcut="C"
    )
    with pytest.raises(ValueError, match="No reference layer"):
        ka.transfer_weights(
            resnet50_reference, ours, "conv1_conv", 1 / 255, None, None
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    "arch, size",
    [("resnet101", SIZE), ("resnet152", SIZE), ("vgg16", 224), ("vgg19", 224)],
)
def test_logits_match_reference(arch, size):
    reference = randomize(ka.build_reference(arch, None, 1000, (size, size, 3)))
    ours = ka._our_model(arch, (size, size, 3), 1000)
    ka.transfer_weights(reference, ours, ka.ARCHS[arch][1], 1 / 255, None, None)
    raw = raw_images(size)
    assert_logits_close(
        np.asarray(ours(ours_input(raw))),
        np.asarray(reference(reference_input(raw))),
    )


def test_keras_vgg_preprocessing_is_the_resnet_one():
    # The tests feed both families through resnet.preprocess_input.
    raw = raw_images(8)
    np.testing.assert_array_equal(
        keras.applications.vgg16.preprocess_input(raw.copy()),
        reference_input(raw),
    )
