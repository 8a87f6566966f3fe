"""Functional model builders that output logits; `MODELS` is the registry.

`build(name, **kwargs)` calls `MODELS[name](**kwargs)`. Every builder takes
`input_shape`, `num_classes` and `conv` (see `models._common`).
"""

from models.mlp import build_bn_mnist_mlp
from models.tiny import build_tiny_cnn

MODELS = {
    "bn_mnist_mlp": build_bn_mnist_mlp,
    "tiny_cnn": build_tiny_cnn,
}


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
