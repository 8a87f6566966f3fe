"""Train and evaluate every mini experiment of the ImageNet table (`--run`).

`make imagenet-table` runs them through the engine, whose `report:` hook
logs the evaluation runs the table reads; `shortened_overrides` shortens
each to a fraction of its steps (`FRACTION`), tagged on its rows.
"""

# The mini table (`make imagenet-table`): conf/experiment/<name>.yaml.
MINI_EXPERIMENTS = (
    "imagenette_alexnet_5cnns",
    "imagenette_vgg_a",
    "imagenette_googlenet",
    "imagenette_resnet18",
)


def _round_to(value, multiple):
    return max(multiple, int(round(value / multiple)) * multiple)


def shortened_overrides(cfg, fraction, max_images=None):
    """Hydra overrides that shorten one experiment to `fraction` of its steps.

    Steps and the step-schedule boundaries are scaled (steps rounded to a
    multiple of `trainer.steps_per_execution`); evaluation and checkpoints
    happen once, at the end.

    Args:
        cfg: the composed experiment config.
        fraction: float in (0, 1].
        max_images: evaluate the table rows on the first `max_images` val
            images (None keeps the config's setting).

    Returns:
        list of `key=value` strings.
    """
    if not 0 < fraction <= 1:
        raise ValueError(
            f"fraction must be in (0, 1]. Received: fraction={fraction}"
        )
    out = [f"++extras.fraction={fraction}"]  # tagged on the table rows
    if fraction < 1:
        spe = int(cfg.trainer.steps_per_execution)
        steps = _round_to(cfg.trainer.steps * fraction, spe)
        out += [
            f"trainer.steps={steps}",
            f"trainer.eval_every_steps={steps}",
            f"trainer.checkpoint_every_steps={steps}",
        ]
        if "boundaries" in cfg.schedule:  # schedule=step
            bounds = [
                min(steps - 1, max(1, int(round(b * fraction))))
                for b in cfg.schedule.boundaries
            ]
            out.append(f"schedule.boundaries=[{','.join(map(str, bounds))}]")
    if max_images:
        current = cfg.report.get("max_images")
        n = min(max_images, current) if current else max_images
        out.append(f"report.max_images={n}")
    return out


def run_mini_table(
    experiments=MINI_EXPERIMENTS, fraction=1.0, max_images=None, overrides=()
):
    """Trains and evaluates every mini experiment (then call `report`).

    Each experiment goes through `experiments.engine.train.train`, whose
    `report:`
    hook (`experiments.evaluate.evaluate_experiment`) logs the evaluation
    runs; finished runs are skipped on a re-run (the engine's run keys).

    Args:
        experiments: conf/experiment names.
        fraction: train each for this fraction of its steps.
        max_images: evaluate on the first `max_images` val images.
        overrides: extra Hydra overrides for every experiment.

    Returns:
        dict `{experiment: wall seconds}`.
    """
    import time

    from convnet_repro.experiments.engine import train as engine
    from convnet_repro.experiments.engine.compose import compose

    seconds = {}
    for name in experiments:
        base = [f"experiment={name}", *overrides]
        cfg = compose(base)
        extra = shortened_overrides(cfg, fraction, max_images)
        cfg = compose(base + extra)
        start = time.time()
        engine.train(cfg)
        seconds[name] = time.time() - start
        print(f"[imagenet_table] {name} {extra}: {seconds[name]:.0f} s")
    return seconds
