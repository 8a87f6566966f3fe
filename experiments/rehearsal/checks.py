"""Checks that what a full-scale config says is what the code does.

Each check returns a `(ok, detail)` pair; `experiments.rehearsal.stages`
turns them into the rehearsal's pass/fail lines. They look at the objects
the engine itself builds (the `data` and `model` nodes instantiated with
Hydra, the MLflow runs the engine and `experiments.evaluate` log), not at
the YAML text.

Reference parameter counts (main network, trainable weights, 1000 classes,
no auxiliary heads) are those of `../shared/PAPERS.md` 3-6 and the model
configs' headers.
"""

import contextlib

import hydra
import numpy as np
from omegaconf import OmegaConf

from convnet_repro.experiments.data import augment as aug
from convnet_repro.experiments.data.protocol_views import num_views
from convnet_repro.experiments.engine import metric_keys as mk

# (builder, variant) -> trainable parameters of the paper network.
PAPER_PARAMETERS = {
    (
        "convnet_repro.models.alexnet.build_alexnet",
        None,
    ): 60_965_224,  # two towers
    ("convnet_repro.models.vgg.build_vgg", "A"): 132_863_336,
    ("convnet_repro.models.vgg.build_vgg", "A-LRN"): 132_863_336,
    ("convnet_repro.models.vgg.build_vgg", "B"): 133_047_848,
    ("convnet_repro.models.vgg.build_vgg", "C"): 133_638_952,
    ("convnet_repro.models.vgg.build_vgg", "D"): 138_357_544,
    ("convnet_repro.models.vgg.build_vgg", "E"): 143_667_240,
    ("convnet_repro.models.googlenet.build_googlenet", None): 6_998_552,
    ("convnet_repro.models.resnet.build_resnet", "resnet18"): 11_689_512,
    ("convnet_repro.models.resnet.build_resnet", "resnet34"): 21_797_672,
    ("convnet_repro.models.resnet.build_resnet", "resnet50"): 25_557_032,
    ("convnet_repro.models.resnet.build_resnet", "resnet101"): 44_549_160,
    ("convnet_repro.models.resnet.build_resnet", "resnet152"): 60_192_808,
    ("convnet_repro.models.bn_inception.build_bn_inception", None): 11_278_528,
}
# Shortcut options A/C of ResNet-34 and BN-free Inception move the count by
# < 5% (projection shortcuts, BN gamma/beta).
PARAMETER_TOLERANCE = 0.05


def reference_parameters(model_cfg):
    """The paper network's parameter count for a `model` node, or None."""
    key = (model_cfg["_target_"], model_cfg.get("variant"))
    if key not in PAPER_PARAMETERS:
        key = (model_cfg["_target_"], None)
    return PAPER_PARAMETERS.get(key)


def main_parameters(model):
    """Trainable parameters outside the auxiliary heads (`aux*` layers)."""
    return sum(
        int(np.prod(w.shape))
        for layer in model.layers
        if not layer.name.startswith("aux")
        for w in layer.trainable_weights
    )


def _classifier_fan_in(model):
    """Input width of the last layer with a 2-D kernel (the classifier)."""
    kernels = [
        w
        for layer in model.layers
        if not layer.name.startswith("aux")
        for w in layer.weights
        if len(w.shape) == 2
    ]
    return int(kernels[-1].shape[0])


def check_model(cfg, model):
    """Resolution, parameter count and heads of the built model.

    Args:
        cfg: the composed experiment config (root, not a child).
        model: `hydra.utils.instantiate(cfg.model)`.

    Returns:
        list of `(name, ok, detail)`.
    """
    data = cfg.data
    side = int(data.crop_size)
    got = tuple(model.input_shape[1:])
    want = (side, side, 3)
    out = [
        (
            "resolution",
            got == want == tuple(data.input_shape),
            f"model input {got}, data.input_shape "
            f"{tuple(data.input_shape)}, crop {side}",
        )
    ]
    reference = reference_parameters(cfg.model)
    count = main_parameters(model)
    classes = int(cfg.data.num_classes)
    if reference is not None and classes != 1000:
        # The papers' counts are for 1000 classes; another label set (e.g.
        # ImageNet-21k pre-training) changes only the classifier's width.
        reference += (classes - 1000) * (_classifier_fan_in(model) + 1)
    if cfg.model.get("width_multiplier", 1.0) != 1.0 or reference is None:
        out.append(("parameters", reference is None, f"{count:,} (no ref)"))
    else:
        ratio = count / reference
        out.append(
            (
                "parameters",
                abs(ratio - 1) <= PARAMETER_TOLERANCE,
                f"{count / 1e6:.2f}M vs paper {reference / 1e6:.2f}M"
                + ("" if classes == 1000 else f" at {classes} classes"),
            )
        )
    if cfg.model.get("aux_logits"):
        weights = list(cfg.trainer.loss_weights or [])
        out.append(
            (
                "aux heads",
                len(model.outputs) == 3 and len(weights) == 3,
                f"{len(model.outputs)} outputs, loss weights {weights}",
            )
        )
    if cfg.model.get("groups", 1) == 2:
        towers = [n.name for n in model.layers if n.name.endswith("_g1")]
        out.append(
            (
                "two towers",
                len(towers) == 3,  # Sec. 3.2: conv2, conv4, conv5 grouped
                f"{len(towers)} second-tower layers: {', '.join(towers)}",
            )
        )
    return out


# The augmentation ops each paper's policy applies (experiments.data.augment;
# `scale_jitter_crop` crops with `random_crop`).
_JITTER = {"scale_jitter_crop", "random_crop", "random_flip", "pca_lighting"}
POLICY_OPS = {
    "alexnet": {"random_crop", "random_flip", "pca_lighting"},
    "vgg": _JITTER,
    "resnet": _JITTER,
    "googlenet": {"random_resized_crop", "random_flip"},
}
_OPS = sorted(set().union(*POLICY_OPS.values()))


@contextlib.contextmanager
def _spy_ops(calls):
    """Records each augmentation op traced into a pipeline, with its args."""
    real = {name: getattr(aug, name) for name in _OPS}

    def spy(name):
        def op(image, *args):
            calls.setdefault(name, args)  # (seed, ...) or (size, seed)
            return real[name](image, *args)

        return op

    for name in _OPS:
        setattr(aug, name, spy(name))
    try:
        yield
    finally:
        for name, fn in real.items():
            setattr(aug, name, fn)


def _want_ops(data):
    want = set(POLICY_OPS[data["augment"]])
    if not data.get("lighting_std"):
        want.discard("pca_lighting")
    return want


def check_data(cfg):
    """The named augmentation is the one applied; batch shapes are right.

    Instantiates `cfg.data` as the engine does, with the augmentation ops
    of `experiments.data.augment` spied on: the ops traced into the training
    stream must be those of the policy the config names, with its crop
    size, scale range (VGG/ResNet), area range (GoogLeNet) and lighting.

    Returns:
        list of `(name, ok, detail)`.
    """
    data = OmegaConf.to_container(cfg.data, resolve=True)
    calls = {}
    with _spy_ops(calls):
        train_ds, val_ds = hydra.utils.instantiate(data, _convert_="all")
        x, _ = next(iter(train_ds))
        v, _ = next(iter(val_ds))
    side, batch = int(data["crop_size"]), int(data["batch_size"])
    want = _want_ops(data)
    ok = set(calls) == want
    if "scale_jitter_crop" in calls:
        _, size_range, crop = calls["scale_jitter_crop"]
        ok &= list(size_range) == list(data["scale_range"]) and crop == side
    if "random_resized_crop" in calls:
        _, crop, area, _ = calls["random_resized_crop"]
        ok &= list(area) == list(data["area_range"]) and crop == side
    if "random_crop" in calls:
        ok &= calls["random_crop"][0] == side
    args = ", ".join(
        f"{k}{tuple(a for a in calls[k] if not hasattr(a, 'shape'))}"
        for k in sorted(calls)
    )
    return [
        (
            "augmentation",
            ok,
            f"{data['augment']}: traced {args or 'nothing'}",
        ),
        (
            "batches",
            tuple(x.shape) == (batch, side, side, 3)
            and tuple(v.shape[1:]) == (side, side, 3),
            f"train {tuple(x.shape)}, val {tuple(v.shape)}",
        ),
    ]


def expected_learning_rate(cfg, step):
    """The config's learning rate at optimizer step `step` (no plateau)."""
    lr = float(cfg.optimizer.learning_rate)
    s = cfg.schedule
    if "decay_rate" in s:  # schedule=exponential
        exponent = step / s.decay_steps
        if s.staircase:
            exponent = np.floor(exponent)
        lr *= s.decay_rate**exponent
    elif "boundaries" in s:  # schedule=step
        lr *= s.gamma ** sum(step >= b for b in s.boundaries)
    return lr


def check_protocol(cfg, evaluations):
    """Every `report.rows` entry scored with its protocol's view count.

    Args:
        cfg: the experiment config.
        evaluations: MLflow evaluation runs the report hook logged.

    Returns:
        list of `(name, ok, detail)`.
    """
    rows = OmegaConf.to_container(cfg.report.rows, resolve=True)
    scales = cfg.report.get("scales")
    by_key = {
        (r.data.tags.get("row"), r.data.params.get("protocol")): r
        for r in evaluations
    }
    out = []
    for row in rows:
        run = by_key.get((row["row"], row["protocol"]))
        want = num_views(row["protocol"], scales)
        got = None if run is None else int(run.data.params["num_views"])
        models = None if run is None else run.data.params["num_models"]
        out.append(
            (
                f"protocol {row['protocol']}",
                got == want,
                f"{row['row']}: {got} views (want {want}), {models} model(s)",
            )
        )
    return out


def check_resumed(client, cfg, runs, killed_ids):
    """Same runs, every one FINISHED, each metric step once, paper lr.

    Args:
        client: `MlflowClient` of the rehearsal's store.
        cfg: the experiment config.
        runs: its training runs (no parent) after the resume.
        killed_ids: ids of the runs that were unfinished after the kill.

    Returns:
        `(ok, detail)`.
    """
    problems = []
    missing = set(killed_ids) - {r.info.run_id for r in runs}
    if missing or not killed_ids:
        problems.append(f"killed run(s) {sorted(missing)} not resumed")
    steps = int(cfg.trainer.steps)
    for run in runs:
        rid = run.info.run_id
        if run.info.status != "FINISHED":
            problems.append(f"{rid[:8]} {run.info.status}")
        for key in (mk.TRAIN_LOSS, mk.LR, mk.VAL_LOSS):
            got = [m.step for m in client.get_metric_history(rid, key)]
            if len(got) != len(set(got)):
                problems.append(f"{rid[:8]} {key} duplicated steps {got}")
        got = sorted(m.step for m in client.get_metric_history(rid, mk.LR))
        if got != list(range(1, steps + 1)):
            problems.append(f"{rid[:8]} lr steps {got}")
    for rid in killed_ids:
        tag = client.get_run(rid).data.tags.get("resumed_from_step")
        if tag != str(cfg.trainer.checkpoint_every_steps):
            problems.append(f"{rid[:8]} resumed_from_step={tag}")
    for child in _child_configs(cfg):
        run = [
            r for r in runs if r.data.tags.get("repro.child", "") == child[0]
        ]
        if not run:
            continue
        lr = client.get_metric_history(run[0].info.run_id, mk.LR)
        want = expected_learning_rate(child[1], 1)
        first = [m.value for m in lr if m.step == 1]
        if not first or abs(first[0] - want) > 1e-6 * max(want, 1e-8):
            problems.append(f"{child[0]} lr@1 {first} != {want}")
    detail = f"{len(runs)} run(s), {len(killed_ids)} resumed"
    return not problems, "; ".join(problems) or detail


def _child_configs(cfg):
    from convnet_repro.experiments.engine.train import expand_children

    children = expand_children(cfg)
    return [(c.name, c.cfg) for c in children] or [("", cfg)]
