"""Our VGG/ResNet builders carrying weights copied from `keras.applications`.

`build_with_keras_weights("resnet50", weights="imagenet")` builds *our*
option-B ResNet-50 (or VGG-D/E for `vgg16`/`vgg19`) and copies every
weight of the corresponding `keras.applications` model into it, so the
published Keras ImageNet weights can be scored with our test protocols.
The two networks differ in three places; each is folded in exactly:

- Input convention. `keras.applications` VGG/ResNet take "caffe" input:
  BGR, 0-255, minus the BGR mean (103.939, 116.779, 123.68). Our pipeline
  feeds RGB `(pixels - mean) * rescale / (std * rescale)` (`data.mean` and
  `data.std` are in 0-255 units). With `mean` the caffe mean
  (`keras_data_settings`), the reference input is our input with the
  channels reversed and multiplied by `std` (or `1 / rescale` without a
  std);
  both are linear (zero maps to zero, so the zero padding agrees too), and
  the flip and the scale go into the first conv's kernel.
- Conv biases before BN (keras.applications ResNets): `BN(conv(x) + b)`
  equals our bias-free conv followed by BN with moving mean `mean - b`.
- BN epsilon: Keras uses 1.001e-5, we use 1e-5; the moving variance gets
  the difference added, so `var + eps` is unchanged.

Keras has no weight-conversion feature for differing layer graphs
(`load_weights` matches variables by layer path, and our conv1 has no
bias); the mapping below is by layer name, which both code bases share
(`conv2_block1_1_conv`, `block1_conv1`, ...), and every weight on both
sides must be used exactly once.

Example:

>>> model = build_with_keras_weights("resnet50", input_shape=(64, 64, 3))
>>> model.output_shape
(None, 1000)
"""

import os

import keras
import numpy as np

from convnet_repro.models.resnet import build_resnet
from convnet_repro.models.vgg import build_vgg

# keras.applications.imagenet_utils "caffe" mode mean, in RGB order (its
# BGR list reversed), in 0-255 units.
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)
# Largest accepted gap between `data.mean` and CAFFE_MEAN_RGB (0-255
# units): a mean written with 2 decimals stays inside.
MEAN_TOLERANCE = 0.01

ARCHS = {
    "vgg16": (keras.applications.VGG16, "block1_conv1"),
    "vgg19": (keras.applications.VGG19, "block1_conv1"),
    "resnet50": (keras.applications.ResNet50, "conv1_conv"),
    "resnet101": (keras.applications.ResNet101, "conv1_conv"),
    "resnet152": (keras.applications.ResNet152, "conv1_conv"),
}
# Our layer name -> keras.applications layer name, where they differ.
_RENAME = {"logits": "predictions"}


def keras_data_settings(rescale=1.0 / 255.0):
    """`data` config values under which the copied weights are exact.

    Args:
        rescale: the pipeline's pixel scale (`data.rescale`).

    Returns:
        `{"rescale": rescale, "mean": [caffe mean RGB, 0-255 units],
        "std": None}`, e.g. as Hydra overrides `data.mean=[...]` (the
        pipeline multiplies a list mean by `rescale`).
    """
    return {
        "rescale": rescale,
        "mean": list(CAFFE_MEAN_RGB),
        "std": None,
    }


def _our_model(arch, input_shape, num_classes):
    kw = {"input_shape": input_shape, "num_classes": num_classes,
          "name": f"{arch}_keras"}  # fmt: skip
    if arch.startswith("vgg"):
        return build_vgg(arch, **kw)
    return build_resnet(arch, shortcut="B", **kw)


def build_reference(arch, weights=None, num_classes=1000, input_shape=None):
    """The `keras.applications` model for `arch`, outputting logits.

    Args:
        arch: a key of `ARCHS`.
        weights: `None` (random), `"imagenet"` (Keras downloads them) or
            the path to a `.h5` / `.weights.h5` file of that model.
        num_classes: int (1000 for published weights).
        input_shape: static `(H, W, 3)`; defaults to (or, with a `None`
            size, falls back to) `(224, 224, 3)`.

    Returns:
        A `keras.Model` with `classifier_activation=None`.
    """
    if arch not in ARCHS:
        raise ValueError(
            f"No keras.applications counterpart; use one of {list(ARCHS)}. "
            f"Received: arch={arch!r}"
        )
    if isinstance(weights, (str, os.PathLike)) and weights != "imagenet":
        if not os.path.exists(weights):
            raise FileNotFoundError(
                "weights must be None, 'imagenet' or an existing .h5 / "
                f".weights.h5 file. Received: weights={str(weights)!r}"
            )
        weights = os.fspath(weights)
    if input_shape is None or None in tuple(input_shape):
        input_shape = (224, 224, 3)
    return ARCHS[arch][0](
        weights=weights,
        input_shape=tuple(input_shape),
        classes=num_classes,
        classifier_activation=None,
    )


def _input_fold(rescale, mean, std):
    """Per-channel factor (`std`, or `1 / rescale`) for RGB channels 0-2.

    Checks that `mean` (0-255 units, as `data.mean`) is the caffe mean, the
    condition for the reference input to be our input times a per-channel
    factor.
    """
    if not rescale or rescale <= 0:
        raise ValueError(f"rescale must be > 0. Received: rescale={rescale!r}")
    if mean is None:
        mean = keras_data_settings(rescale)["mean"]
    if isinstance(mean, str) or len(mean) != 3:
        raise ValueError(
            "mean must be the 3 caffe means in 0-255 units "
            f"(keras_data_settings). Received: mean={mean!r}"
        )
    raw = np.asarray(mean, np.float64)
    if np.max(np.abs(raw - CAFFE_MEAN_RGB)) > MEAN_TOLERANCE:
        raise ValueError(
            "keras.applications weights expect the caffe mean RGB "
            f"(0-255 units); set data.mean={list(CAFFE_MEAN_RGB)}. "
            f"Received: mean={list(mean)!r}"
        )
    if std is None:
        return np.full(3, 1.0 / rescale)
    std = np.asarray(std, np.float64)
    if std.shape != (3,) or np.any(std <= 0):
        raise ValueError(
            f"std must be None or 3 positive numbers. Received: std={std!r}"
        )
    return std


def transfer_weights(reference, model, first_conv, rescale, mean, std):
    """Copies `reference` (keras.applications) weights into `model` (ours).

    Args:
        reference: the `keras.applications` model.
        model: our model with the same layer names (`logits` =
            `predictions`).
        first_conv: name of the conv fed by the image.
        rescale, mean, std: our pipeline's `data` settings.

    Returns:
        `model`, whose output on our input equals the reference logits on
        the caffe-preprocessed same images.

    Raises:
        ValueError: when a weight on either side has no counterpart.
    """
    fold = _input_fold(rescale, mean, std)
    ref = {la.name: la for la in reference.layers if la.weights}
    used = set()
    biases = {}  # our BN layer name -> folded bias of the conv before it
    ours = [la for la in model.layers if la.weights]
    for layer in ours:  # convs and dense first: BN needs their biases
        if isinstance(layer, keras.layers.BatchNormalization):
            continue
        src = ref.get(_RENAME.get(layer.name, layer.name))
        if src is None or type(src) is not type(layer):
            raise ValueError(f"No reference layer for {layer.name!r}.")
        kernel, *bias = src.get_weights()
        if layer.name == first_conv:
            # Reference channel c' reads our channel 2 - c', scaled.
            kernel = kernel[:, :, ::-1, :] * fold[:, None]
        if bias and not layer.use_bias:
            biases[layer.name.removesuffix("_conv") + "_bn"] = bias[0]
            bias = []
        layer.set_weights([kernel, *bias])
        used.add(src.name)
    for layer in ours:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        src = ref.get(layer.name)
        if src is None or not isinstance(src, type(layer)):
            raise ValueError(f"No reference BN for {layer.name!r}.")
        gamma, beta, mu, var = src.get_weights()
        mu = mu - biases.pop(layer.name, 0.0)
        var = var + (src.epsilon - layer.epsilon)
        layer.set_weights([gamma, beta, mu, var])
        used.add(src.name)
    left = sorted(set(ref) - used) + sorted(biases)
    if left:
        raise ValueError(f"Reference weights left unused: {left[:5]}")
    return model


def build_with_keras_weights(
    arch,
    weights=None,
    num_classes=1000,
    input_shape=(224, 224, 3),
    rescale=1.0 / 255.0,
    mean=None,
    std=None,
):
    """Builds our `arch` with every weight of its `keras.applications` twin.

    `vgg16` is our VGG-D, `vgg19` VGG-E, `resnet50/101/152` our option-B
    ResNets. The result expects our pipeline's input: RGB
    `(pixels - mean) * rescale`, or `(pixels - mean) / std`, with `mean`
    the caffe mean RGB (123.68, 116.779, 103.939) in 0-255 units: the
    default of `conf/data/imagenet2012.yaml` (`keras_data_settings`). Any
    `rescale` and `std` are folded into the first conv; a different mean
    (such as the torchvision [0.485, 0.456, 0.406] x 255) is refused,
    because its offset cannot be folded exactly at the zero-padded
    borders.

    Args:
        arch: `"vgg16"`, `"vgg19"`, `"resnet50"`, `"resnet101"` or
            `"resnet152"`.
        weights: `None` (random reference weights, for tests),
            `"imagenet"` (Keras downloads them) or the path to a `.h5` /
            `.weights.h5` file of the `keras.applications` model.
        num_classes: int; 1000 for the published weights.
        input_shape: our model's `(H, W, 3)`. ResNets accept any size
            (`(None, None, 3)` too); VGG's FC layers need the reference's
            size (224 for published weights).
        rescale: the pipeline's `data.rescale`.
        mean: the pipeline's `data.mean` (list, 0-255 units); `None`
            means the caffe mean.
        std: the pipeline's `data.std` (list, 0-255 units) or `None`.

    Returns:
        Our `keras.Model` (logits), named `"<arch>_keras"`.

    Raises:
        ValueError: unknown `arch`, or `mean` not the caffe mean.
        FileNotFoundError: `weights` is a path that does not exist.
    """
    _input_fold(rescale, mean, std)  # fail before building anything
    reference = build_reference(arch, weights, num_classes, input_shape)
    model = _our_model(arch, tuple(input_shape), num_classes)
    return transfer_weights(
        reference, model, ARCHS[arch][1], rescale, mean, std
    )
