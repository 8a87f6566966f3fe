"""BN-Inception's measured quantities per variant (BN paper Fig. 2 and 3).

From each variant's validation-accuracy curve (one per seed, and their
mean at the steps every seed evaluated):

- **steps to threshold**: the first evaluated training step at which the
  variant's single-crop validation accuracy reaches the *maximum* accuracy of
  the baseline variant (`inception`). This is the paper's "steps to 72.2%":
  72.2% is Inception's maximum (Fig. 3 caption). Accuracy is only known at
  evaluation steps, so the resolution is `trainer.eval_every_steps` (no
  interpolation between evaluations).
- **max accuracy**: the maximum over all evaluations, with its step, and
  the speed-up over the baseline (baseline steps / variant steps).
- **steps to fixed accuracies** (`fixed_thresholds`, not in the paper): the
  first evaluation from which the centred 3-point moving average of the
  curve stays at or above X to the end (`smoothing.steps_to_threshold`),
  so a single noisy evaluation, or a crossing that falls back, does not
  count; with several seeds per variant, the mean over seeds with a 95%
  t-interval. This is the robust comparison: the paper-style column above
  is a first crossing of single evaluations of one (seed-mean) curve.
"""

import dataclasses
import math

from convnet_repro.experiments.reports import smoothing
from convnet_repro.experiments.reports import statistics as st

SMOOTH_WINDOW = 3  # evaluations in the centred moving average

# Child-run (variant) names in the paper's row order, with the paper's labels.
VARIANT_LABELS = {
    "inception": "Inception",
    "bn_baseline": "BN-Baseline",
    "bn_x5": "BN-x5",
    "bn_x30": "BN-x30",
    "bn_x5_sigmoid": "BN-x5-Sigmoid",
    "inception_sigmoid": "Inception-Sigmoid",
}


@dataclasses.dataclass
class VariantResult:
    """The paper's quantities for one variant, measured from its curve.

    Attributes:
        name: variant (child run) name, e.g. `"bn_x5"`.
        steps: evaluated training steps, ascending.
        values: validation accuracy at each of `steps`.
        max_accuracy: `max(values)`, or `None` without evaluations.
        step_at_max: first step at which `max_accuracy` occurs.
        steps_to_threshold: first step with accuracy >= threshold, or `None`
            if never reached.
        speedup: baseline's `steps_to_threshold` / this variant's, or `None`.
        seed_curves: `{seed: (steps, values)}`, one entry per seed run.
    """

    name: str
    steps: list
    values: list
    max_accuracy: float | None = None
    step_at_max: int | None = None
    steps_to_threshold: int | None = None
    speedup: float | None = None
    seed_curves: dict = dataclasses.field(default_factory=dict)

    @property
    def label(self):
        return VARIANT_LABELS.get(self.name, self.name)


def steps_to_threshold(steps, values, threshold):
    """First step at which `values` reaches `threshold`.

    Args:
        steps: sequence of int training steps, ascending.
        values: sequence of float accuracies, one per step.
        threshold: float accuracy to reach (inclusive).

    Returns:
        The int step, or `None` if no value reaches `threshold`.

    Example:

    >>> steps_to_threshold([100, 200, 300], [0.2, 0.5, 0.4], 0.45)
    200
    """
    if len(steps) != len(values):
        raise ValueError(
            "`steps` and `values` must have the same length. Received: "
            f"len(steps)={len(steps)}, len(values)={len(values)}"
        )
    for step, value in zip(steps, values):
        # A relative tolerance so that the baseline reaches its own maximum
        # even after a float round trip through the tracking store.
        if value >= threshold - 1e-9 * max(1.0, abs(threshold)):
            return int(step)
    return None


def summarize(histories, baseline="inception", threshold=None, strict=True):
    """Computes the paper's table from accuracy-vs-steps histories.

    Args:
        histories: dict `{variant: [(step, accuracy), ...]}`, or
            `{variant: {seed: [(step, accuracy), ...]}}` for several seeds
            (averaged at the steps every seed evaluated); the order of the
            pairs does not matter. NaN accuracies are ignored.
        baseline: the variant whose maximum accuracy is the threshold and
            whose steps are the speed-up reference.
        threshold: float; overrides the baseline's maximum (e.g. `0.722` to
            use the paper's absolute number). `None` uses the baseline's max.
        strict: bool; if False, a missing baseline gives a `None` threshold
            (no steps, no speed-ups) instead of an error.

    Returns:
        `(threshold, results)`: the float threshold (or `None` if it cannot be
        defined) and a list of `VariantResult` in the paper's row order, then
        any other variants alphabetically.

    Raises:
        ValueError: if `threshold` is None and `baseline` is not in
            `histories`.
    """
    if threshold is None and baseline not in histories and strict:
        raise ValueError(
            f"The baseline variant {baseline!r} has no runs, so the threshold "
            "(its maximum accuracy) is undefined; pass `threshold=` or run "
            f"the baseline. Received: variants={sorted(histories)}"
        )
    order = [n for n in VARIANT_LABELS if n in histories]
    order += sorted(n for n in histories if n not in VARIANT_LABELS)
    results = {}
    for name in order:
        result = _variant_result(name, histories[name])
        pairs = list(zip(result.steps, result.values))
        if pairs:
            result.max_accuracy = max(result.values)
            result.step_at_max = result.steps[
                result.values.index(result.max_accuracy)
            ]
        results[name] = result
    if threshold is None and baseline in results:
        threshold = results[baseline].max_accuracy
    if threshold is not None:
        for result in results.values():
            result.steps_to_threshold = steps_to_threshold(
                result.steps, result.values, threshold
            )
        ref = results.get(baseline)
        ref_steps = ref.steps_to_threshold if ref else None
        for result in results.values():
            if ref_steps and result.steps_to_threshold:
                result.speedup = ref_steps / result.steps_to_threshold
    return threshold, list(results.values())


def _variant_result(name, history):
    """A `VariantResult` with its seed curves and their mean curve."""
    seeds = history if isinstance(history, dict) else {None: history}
    curves = {}
    for seed, pairs in seeds.items():
        clean = dict(
            sorted((int(s), float(v)) for s, v in pairs if not math.isnan(v))
        )
        curves[seed] = (list(clean), list(clean.values()))
    common = sorted(set.intersection(*(set(c[0]) for c in curves.values())))
    values = [
        sum(dict(zip(*c))[s] for c in curves.values()) / len(curves)
        for s in common
    ]
    return VariantResult(name, common, values, seed_curves=curves)


def steps_to_fixed_seeds(results, thresholds, window=SMOOTH_WINDOW):
    """Per seed, the smoothed steps to each fixed accuracy, with intervals.

    Returns:
        dict `{variant: [dict per threshold]}`: `per_seed` (step or None
        per seed), `reached`, `seeds`, and `mean`, `lo`, `hi` of
        `statistics.seed_interval` over the seeds (`mean` None unless every
        seed reached it; `lo`/`hi` None for one seed).
    """
    out = {}
    for r in results:
        out[r.name] = []
        for t in thresholds:
            per_seed = [
                smoothing.steps_to_threshold(s, v, t, window) if s else None
                for s, v in r.seed_curves.values()
            ]
            reached = [x for x in per_seed if x is not None]
            cell = {"per_seed": per_seed, "reached": len(reached)}
            cell["seeds"] = len(per_seed)
            if per_seed and len(reached) == len(per_seed):
                cell.update(st.seed_interval(reached))
            else:
                cell.update(mean=None, lo=None, hi=None)
            out[r.name].append(cell)
    return out


def steps_to_fixed(results, thresholds, window=SMOOTH_WINDOW):
    """Steps from which each variant's smoothed curve stays >= each accuracy.

    Returns:
        dict `{variant: [step (seed mean for several seeds) or None per
        threshold]}`; None unless every seed stays above.
    """
    return {
        name: [cell["mean"] for cell in cells]
        for name, cells in steps_to_fixed_seeds(
            results, thresholds, window
        ).items()
    }
