"""BN-Inception's Fig. 3 claims tested over seeds (Welch).

The paper's Fig. 3 makes two kinds of claims, each a pair of variants:
every BN variant ends higher than Inception and BN-x30 higher than BN-x5
(max accuracy), and BN-Baseline trains in fewer steps than Inception,
BN-x5 and BN-x30 in fewer than BN-Baseline (steps to an accuracy). With
several seeds per variant each pair gets a Welch test over seeds
(`paired_tests.seed_difference`: the seeds of two variants are independent
runs, not paired) and a verdict, holds / not significant / fails. Steps
are the smoothed steps to each fixed accuracy
(`bn_inception_curves.steps_to_fixed_seeds`); a pair is not tested at an
accuracy that some seed of either variant never reaches (the step is then
censored, not known).
"""

from convnet_repro.experiments.reports import paired_tests as pt
from convnet_repro.experiments.reports.bn_inception_curves import VARIANT_LABELS
from convnet_repro.experiments.reports.bn_inception_curves import (
    steps_to_fixed_seeds,
)

# (better, worse) as the paper's Fig. 3 orders them: max accuracy 72.7 /
# 73.0 / 74.8% vs Inception's 72.2%, BN-x30 74.8% vs BN-x5 73.0%.
HIGHER_MAX = (
    ("bn_baseline", "inception"),
    ("bn_x5", "inception"),
    ("bn_x30", "inception"),
    ("bn_x30", "bn_x5"),
)
# Steps to Inception's maximum: 13.3M (BN-Baseline) vs 31.0M (Inception);
# 2.1M (BN-x5) and 2.7M (BN-x30) vs BN-Baseline's 13.3M.
FEWER_STEPS = (
    ("bn_baseline", "inception"),
    ("bn_x5", "inception"),
    ("bn_x30", "inception"),
    ("bn_x5", "bn_baseline"),
    ("bn_x30", "bn_baseline"),
)


def seed_maxima(results):
    """`{variant: [max accuracy of each seed's curve]}` (seeds in order)."""
    return {
        r.name: [max(values) for _, values in r.seed_curves.values() if values]
        for r in results
    }


def _pair(claim, better, worse, better_values, worse_values, direction):
    names = [VARIANT_LABELS.get(v, v) for v in (better, worse)]
    out = {"claim": claim, "pair": " vs ".join(names)}
    out.update(better=better, worse=worse)
    missing = [
        f"{VARIANT_LABELS.get(name, name)}: {why}"
        for name, values in ((better, better_values), (worse, worse_values))
        for why in [_untestable(values)]
        if why
    ]
    if missing:
        return {**out, "verdict": "not tested (" + "; ".join(missing) + ")"}
    test = pt.seed_difference(worse_values, better_values)  # better - worse
    return {
        **out,
        **test,
        "verdict": pt.verdict(
            test["difference"], test["p_value"], direction=direction
        ),
    }


def _untestable(values):
    if any(v is None for v in values):
        reached = sum(v is not None for v in values)
        return f"{reached}/{len(values)} seeds reached it"
    if len(values) < 2:
        return f"{len(values)} seed"
    return ""


def compare_seeds(results, thresholds):
    """Every Fig. 3 pair present in `results`, tested over seeds.

    Args:
        results: `VariantResult`s (`bn_inception_curves.summarize`).
        thresholds: the fixed accuracies of the steps table.

    Returns:
        list of dicts: `claim`, `pair`, `better`, `worse`, and either
        `difference` (better minus worse: accuracy points, or steps),
        `lo`, `hi`, `p_value`, `verdict`, or only a `verdict` saying why
        the pair was not tested. Pairs with a variant not run are left out.
    """
    names = {r.name for r in results}
    maxima = {
        name: [100 * v for v in values]
        for name, values in seed_maxima(results).items()
    }
    out = [
        _pair("higher max accuracy", b, w, maxima[b], maxima[w], +1)
        for b, w in HIGHER_MAX
        if {b, w} <= names
    ]
    steps = steps_to_fixed_seeds(results, thresholds)
    for i, t in enumerate(thresholds):
        out += [
            _pair(
                f"fewer steps to {100 * t:.0f}%",
                b,
                w,
                steps[b][i]["per_seed"],
                steps[w][i]["per_seed"],
                -1,
            )
            for b, w in FEWER_STEPS
            if {b, w} <= names
        ]
    return out


def format_comparisons(results, comparisons):
    """Markdown: each seed's max accuracy, then `compare_seeds`' pairs."""
    if not comparisons:
        return ""
    lines = ["| Model | Max acc. per seed (seed order) |", "|---|---|"]
    for r in results:
        maxima = seed_maxima([r])[r.name]
        cells = ", ".join(f"{100 * v:.1f}%" for v in maxima)
        lines.append(f"| {r.label} | {cells} |")
    lines += [
        "",
        "| Claim (paper Fig. 3) | Pair | Ours: difference [95% Welch] "
        "| p | Verdict |",
        "|---|---|---:|---:|---|",
    ]
    for c in comparisons:
        if "difference" in c:
            unit = " pts" if c["claim"].startswith("higher") else ""
            fmt = "{:+.1f}" if unit else "{:+,.0f}"
            diff = (
                f"{fmt.format(c['difference'])}{unit} [{fmt.format(c['lo'])}, "
                f"{fmt.format(c['hi'])}]"
            )
            p = f"{c['p_value']:.2g}"
        else:
            diff, p = "", ""
        lines.append(
            f"| {c['claim']} | {c['pair']} | {diff} | {p} | {c['verdict']} |"
        )
    return "\n".join(lines) + "\n"
