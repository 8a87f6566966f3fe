"""The papers' orderings, checked on the ImageNet table's rows.

Orderings checked (each pair "holds" when the first has the lower error on
the metric of the paper table the claim comes from, `PAPER_METRIC`):

1. ensembles beat single models (same family, same protocol);
2. multi-crop beats one crop (same models, more views);
3. deeper families beat AlexNet (single models, same protocol; on top-5
   when either table reports only top-5, as GoogLeNet's does);
4. pre-training on ImageNet Fall 2011 helps (AlexNet "1 CNN*" < "1 CNN").

`experiments.reports.imagenet_stats.judge` adds each pair's paired test.
"""

from convnet_repro.experiments.reports.imagenet_rows import FAMILIES
from convnet_repro.experiments.reports.imagenet_rows import PROTOCOL_LABELS

# The metric of each family's paper table (PAPERS.md): AlexNet Table 2,
# VGG Table 3 and ResNet Table 3 give top-1 and top-5 and lead with top-1
# (ResNet Table 2 is top-1 only); GoogLeNet's Table 3 is top-5 only.
PAPER_METRIC = {
    "AlexNet": "top1_error",
    "VGG": "top1_error",
    "GoogLeNet": "top5_error",
    "ResNet": "top1_error",
}


def paper_metric(*rows):
    """The error metric the papers compare `rows` on.

    A family's own table metric (`PAPER_METRIC`); across families top-5 as
    soon as one table reports only top-5. Rows of other families follow
    their paper numbers: top-5 when they quote only a top-5 error.

    Args:
        *rows: the `Row`s of one comparison.

    Returns:
        `"top1_error"` or `"top5_error"`.
    """
    metrics = set()
    for row in rows:
        if row.family in PAPER_METRIC:
            metrics.add(PAPER_METRIC[row.family])
        elif row.paper_top1_error is None and row.paper_top5_error is not None:
            metrics.add("top5_error")
        else:
            metrics.add("top1_error")
    return "top5_error" if "top5_error" in metrics else "top1_error"


def check_orderings(rows):
    """The papers' orderings, tested on our rows.

    Args:
        rows: list of `Row` (one table).

    Returns:
        list of dicts `{claim, better, worse, holds}`; `better` is the row
        the papers say has the lower error.
    """
    checks = []
    main = [r for r in rows if r.family in FAMILIES[:4]]
    # 1. Ensembles beat single models (same family, same protocol).
    for ens in main:
        if ens.num_models < 2:
            continue
        for single in main:
            if (
                single.family == ens.family
                and single.num_models == 1
                and single.protocol == ens.protocol
            ):
                checks.append(_check("ensemble < single model", ens, single))
    # 2. More views beat fewer views (same source models).
    for many in rows:
        for few in rows:
            if (
                many.sources
                and many.sources == few.sources
                and many.family == few.family
                and many.num_views > few.num_views
            ):
                checks.append(_check("multi-crop < fewer crops", many, few))
    # 3. Deeper families beat AlexNet (single models, same protocol).
    alex = [r for r in main if r.family == "AlexNet" and r.num_models == 1]
    for deep in main:
        if deep.family == "AlexNet" or deep.num_models != 1:
            continue
        for a in alex:
            if a.protocol == deep.protocol:
                checks.append(_check("deeper family < AlexNet", deep, a))
    # 4. Pre-training helps (AlexNet Table 2: 1 CNN* < 1 CNN, 7 CNNs* <
    #    5 CNNs): a "*" row beats the same family's rows without "*" of
    #    as many models or fewer, same protocol.
    for pre in main:
        if not pre.row.endswith("*"):
            continue
        for base in main:
            if (
                base.family == pre.family
                and not base.row.endswith("*")
                and base.protocol == pre.protocol
                and base.num_models <= pre.num_models
            ):
                checks.append(_check("pre-trained* < from scratch", pre, base))
    return checks


def _label(row):
    return f"{row.row} ({PROTOCOL_LABELS.get(row.protocol, row.protocol)})"


def _check(claim, better, worse):
    metric = paper_metric(better, worse)
    ours, theirs = getattr(better, metric), getattr(worse, metric)
    return {
        "claim": claim,
        "metric": metric,
        "better": _label(better),
        "worse": _label(worse),
        "better_error": ours,
        "worse_error": theirs,
        "better_run_id": better.run_id,
        "worse_run_id": worse.run_id,
        "holds": ours < theirs,
        "tie": ours == theirs,
    }
