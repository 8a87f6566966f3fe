"""Fine-tuning: start a run from another run's (or model's) weights.

The `finetune:` config node (`FinetuneConfig` in `config_schema`):

    finetune:
      source: <run id | runs:/<id> | models:/<name>/<version> | path.keras>
      head: null              # layers re-initialised; null = the output layers
      reinit_head: true       # false: copy the head too (same label set)
      head_lr_multiplier: null  # e.g. 10: the head learns 10x faster (SGD)

`experiments.engine.build.build_run` calls `apply` right after the model
is built:
every layer with weights is copied from the source by name, except the head
layers, which keep the builder's fresh initialisation (so `num_classes` may
differ from the source's). A resumed run (`skip_batches > 0`) does not load
the source at all: its own checkpoint, restored by the engine after the
build, holds every weight; a deleted source does not stop a resume.

Layers are matched by name, not by position, as Keras' own
`load_weights(..., skip_mismatch=True)` cannot do for `.keras` files of
another label set (it matches by layer order and would silently skip every
mismatch); here a non-head layer whose shapes differ is an error that names
the layer.

A per-layer learning rate has no Keras 3 optimizer option. For SGD (with
or without momentum, paper-style L2 decay in the loss) multiplying the head
variables' gradients by `m` is exactly a learning rate `m * lr` for them
(Caffe's `lr_mult`), so `head_lr_multiplier` does that; for Adam/RMSprop a
gradient scale is (nearly) cancelled by the normalisation, so it is refused.

`tags` records the source as `finetune.source` / `finetune.source_run_id`
tags and a run description (`mlflow.note.content`) that links the source
run in the MLflow UI.
"""

import logging

import keras

from convnet_repro.experiments.engine.config_schema import ConfigError

log = logging.getLogger(__name__)


def enabled(cfg):
    """True when `cfg` fine-tunes from a source."""
    node = cfg.get("finetune") if hasattr(cfg, "get") else None
    return node is not None and node.get("source") is not None


def source_run_id(source):
    """MLflow run id of `source`, or None for a `.keras` path."""
    from convnet_repro.experiments.evaluation import sources

    source = str(source)
    if source.endswith(".keras"):
        return None
    return sources.resolve_run_id(source)


def load_source(source):
    """The source model (`compile=False`); one-line `ConfigError` if absent."""
    from convnet_repro.experiments.evaluation import sources

    try:
        return sources.load_model(source)
    except Exception as e:  # MLflow, file and artifact errors alike
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ConfigError(
            "finetune.source cannot be loaded; give a finished run id, "
            "runs:/<id>, models:/<name>/<version> or a .keras path "
            f"({type(e).__name__}: {first[:300]}). "
            f"Received: finetune.source={source!r}"
        ) from e


def head_names(model, head=None):
    """Names of the head layers: `head`, or the layers making the outputs."""
    if head:
        names = [str(h) for h in head]
        known = {layer.name for layer in model.layers}
        missing = [n for n in names if n not in known]
        if missing:
            raise ConfigError(
                f"finetune.head names layers the model lacks: {missing}; "
                f"use names of its layers (e.g. {model.layers[-1].name!r}). "
                f"Received: finetune.head={names}"
            )
        return names
    outputs = list(model.outputs)
    return [
        layer.name
        for layer in model.layers
        if any(layer.output is o for o in outputs)
    ]


def _shapes(layer):
    return [tuple(w.shape) for w in layer.weights]


def transfer_weights(source_model, model, head=None, reinit_head=True):
    """Copies weights from `source_model` into `model`, layer by name.

    Args:
        source_model: the pre-trained `keras.Model`.
        model: the freshly built model to fine-tune (changed in place).
        head: names of the head layers (None: the output layers).
        reinit_head: True keeps the head's fresh initialisation; False
            copies it too (its shapes must match).

    Returns:
        Dict with the layer names `copied`, `head` (re-initialised) and
        `new` (in `model` only, left as built).

    Raises:
        ConfigError: no layer matches by name, or a copied layer's weight
            shapes differ from the source's.
    """
    heads = set(head_names(model, head))
    by_name = {la.name: la for la in source_model.layers if la.weights}
    copied, new, reset = [], [], []
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name in heads and reinit_head:
            reset.append(layer.name)
            continue
        src = by_name.get(layer.name)
        if src is None:
            new.append(layer.name)
            continue
        if _shapes(src) != _shapes(layer):
            raise ConfigError(
                f"layer {layer.name!r} has weights {_shapes(src)} in the "
                f"source and {_shapes(layer)} here; build the model as the "
                "source was (input size, widths) or add the layer to "
                f"finetune.head. Received: finetune.head={sorted(heads)}"
            )
        layer.set_weights(src.get_weights())
        copied.append(layer.name)
    if not copied:
        raise ConfigError(
            "no layer of finetune.source matches this model by name "
            f"(source layers: {sorted(by_name)[:8]}); fine-tune a model "
            f"built by the same builder. Received: model={model.name!r}"
        )
    if new:
        log.warning("finetune: layers not in the source, as built: %s", new)
    return {"copied": copied, "head": reset, "new": new}


def apply(cfg, model, skip_batches=0):
    """The fine-tuning hook of `build_run`: loads the source into `model`.

    Skipped for a resumed run (`skip_batches > 0`), whose checkpoint holds
    all its weights. Returns `transfer_weights`' dict, or None.
    """
    if not enabled(cfg) or skip_batches:
        return None
    f = cfg.finetune
    source = load_source(f.source)
    done = transfer_weights(source, model, f.head, f.reinit_head)
    log.info(
        "finetune: %d layers from %s, head re-initialised: %s",
        len(done["copied"]),
        f.source,
        done["head"],
    )
    return done


def scale_head_gradients(optimizer, model, cfg):
    """Multiplies the head's gradients by `finetune.head_lr_multiplier`.

    For SGD this is the head's learning rate times the multiplier (see the
    module docstring). Wraps the optimizer instance's `apply` (a Keras 3
    optimizer has no per-variable learning rate); its class, config and
    checkpointed variables are unchanged. Returns `optimizer`.
    """
    mult = cfg.finetune.head_lr_multiplier if enabled(cfg) else None
    if mult is None or mult == 1.0:
        return optimizer
    if type(optimizer) is not keras.optimizers.SGD:
        raise ConfigError(
            "finetune.head_lr_multiplier needs optimizer=sgd (a gradient "
            "scale is not a learning rate for adaptive optimizers); unset it. "
            f"Received: optimizer._target_={cfg.optimizer._target_}"
        )
    heads = set(head_names(model, cfg.finetune.head))
    paths = {
        v.path
        for layer in model.layers
        if layer.name in heads
        for v in layer.trainable_variables
    }
    inner_apply = optimizer.apply

    def apply_scaled(grads, trainable_variables=None):
        if trainable_variables is not None:
            grads = [
                g * mult if g is not None and v.path in paths else g
                for g, v in zip(grads, trainable_variables)
            ]
        return inner_apply(grads, trainable_variables)

    optimizer.apply = apply_scaled
    return optimizer


def tags(cfg):
    """MLflow tags naming the source run, and a UI note linking it."""
    if not enabled(cfg):
        return {}
    source = str(cfg.finetune.source)
    out = {"finetune.source": source}
    try:
        run_id = source_run_id(source)
    except Exception as e:  # a tag must not fail the run
        log.warning("finetune: source run id not resolved: %s", e)
        run_id = None
    if run_id is None:
        out["mlflow.note.content"] = f"Fine-tuned from `{source}`."
        return out
    out["finetune.source_run_id"] = run_id
    link = run_id
    try:
        from mlflow import MlflowClient

        exp = MlflowClient().get_run(run_id).info.experiment_id
        link = f"[{run_id}](#/experiments/{exp}/runs/{run_id})"
    except Exception as e:
        log.warning("finetune: source run %s not found: %s", run_id, e)
    out["mlflow.note.content"] = (
        f"Fine-tuned from run {link} (`finetune.source={source}`)."
    )
    return out
