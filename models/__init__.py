"""Functional model builders that output logits; `MODELS` is the registry.

`build(name, **kwargs)` calls `MODELS[name](**kwargs)`. Every builder takes
`input_shape`, `num_classes` and `conv` (see `models._common`). Family
names map to the generic builders; variant names (`vgg16`, `resnet50`,
...) are the same builders with `variant` bound.
"""

import functools

from convnet_repro.models.alexnet import build_alexnet
from convnet_repro.models.bn_inception import build_bn_inception
from convnet_repro.models.googlenet import build_googlenet
from convnet_repro.models.mlp import build_bn_mnist_mlp
from convnet_repro.models.resnet import VARIANTS as RESNET_VARIANTS
from convnet_repro.models.resnet import build_resnet
from convnet_repro.models.tiny import build_engine_mlp
from convnet_repro.models.tiny import build_tiny_cnn
from convnet_repro.models.vgg import ALIASES as VGG_ALIASES
from convnet_repro.models.vgg import build_vgg

MODELS = {
    "bn_mnist_mlp": build_bn_mnist_mlp,
    "tiny_cnn": build_tiny_cnn,
    "engine_mlp": build_engine_mlp,
    "alexnet": build_alexnet,
    "vgg": build_vgg,
    "googlenet": build_googlenet,
    "resnet": build_resnet,
    "bn_inception": build_bn_inception,
}
MODELS.update({v: functools.partial(build_vgg, variant=v) for v in VGG_ALIASES})
MODELS.update(
    {v: functools.partial(build_resnet, variant=v) for v in RESNET_VARIANTS}
)


def build(name, **kwargs):
    """Builds the registered model `name` with `kwargs`.

    Args:
        name: a key of `MODELS`.
        **kwargs: passed to the builder.

    Returns:
        A `keras.Model` whose output is logits.

    Raises:
        ValueError: for an unknown name.
    """
    if name not in MODELS:
        raise ValueError(
            f"Unknown model; use one of {sorted(MODELS)}. "
            f"Received: name={name!r}"
        )
    return MODELS[name](**kwargs)
