"""BN-MNIST summary: rows with intervals, the paper's claims with tests.

The maths of `experiments.reports.bn_mnist` on plain per-run dicts (no
MLflow): `summarize` (one row per network: seed-mean accuracies with
intervals that include the test-set standard error, tuning-split accuracy,
smoothed steps to 96% / 97%; the Fig. 1 claims, each with a paired or
seed-level test and a verdict). The files are written by
`experiments.reports.bn_mnist_table`. All statistics come from
`experiments.reports.statistics`, `paired_tests` and `smoothing`.
"""

import math

import numpy as np

from convnet_repro.experiments.reports import paired_tests as pt
from convnet_repro.experiments.reports import smoothing
from convnet_repro.experiments.reports import statistics as st
from convnet_repro.experiments.reports.bn_mnist_figures import VARIANT_LABELS

THRESHOLDS = (0.96, 0.97)
SMOOTH_WINDOW = 3
DRIFT_FROM = 0.1  # percentile ranges from 10% of training to the end
# Params that must agree between the runs of one table.
PROTOCOL_KEYS = (
    "trainer.steps",
    "data.num_train_examples",
    "data.binarize",
    "data.batch_size",
    "optimizer.learning_rate",
)


def _clean(history):
    """`[(step, value), ...]` -> sorted, NaN-free, last value per step."""
    by_step = {}
    for step, value in history:
        if value is not None and not math.isnan(float(value)):
            by_step[int(step)] = float(value)
    return sorted(by_step.items())


def _band(histories, centre):
    """`{steps, centre, lo, hi}` over the steps every history has."""
    cleaned = [dict(_clean(h)) for h in histories if h]
    if not cleaned:
        return {"steps": [], centre: [], "lo": [], "hi": [], "seeds": 0}
    common = sorted(set.intersection(*(set(c) for c in cleaned)))
    table = np.array([[c[s] for s in common] for c in cleaned])
    mid = table.mean(0) if centre == "mean" else np.median(table, 0)
    return {
        "steps": common,
        centre: mid.tolist(),
        "lo": table.min(0).tolist(),
        "hi": table.max(0).tolist(),
        "seeds": len(cleaned),
    }


def check_protocol(runs):
    """Raises ValueError if the runs differ in length or data settings."""
    for key in PROTOCOL_KEYS + ("final_step",):
        if key == "final_step":
            seen = {_clean(r["accuracy"])[-1][0] for r in runs if r["accuracy"]}
        else:
            seen = {str(r.get("params", {}).get(key)) for r in runs}
        if len(seen) > 1:
            raise ValueError(
                f"The runs differ in {key} ({sorted(seen, key=str)}); one "
                "table never mixes runs of different lengths or data. "
                "Report each parent run on its own."
            )


def _headline(run):
    """(accuracy, source) of a run's final model."""
    if run.get("correct_test") is not None:
        return float(np.mean(run["correct_test"])), "per-image"
    if run.get("accuracy_population") is not None:
        return float(run["accuracy_population"]), "logged"
    return _clean(run["accuracy"])[-1][1], "logged"


def _steps_to(group, threshold, window):
    per_seed = []
    for run in group:
        pairs = _clean(run["accuracy"])
        per_seed.append(
            smoothing.steps_to_threshold(
                [s for s, _ in pairs], [v for _, v in pairs], threshold, window
            )
        )
    reached = [s for s in per_seed if s is not None]
    out = {"per_seed": per_seed, "reached": len(reached), "seeds": len(group)}
    out.update(st.seed_interval(reached) if reached else {"mean": None})
    return out


def _drift(run, q):
    """Range (max - min) of percentile `q` after the first `DRIFT_FROM` of
    training (the initial transient excluded: Fig. 1(b, c) is about how the
    distribution keeps moving while the network trains)."""
    pairs = _clean(run["percentiles"].get(q, []))
    if not pairs:
        return None
    start = DRIFT_FROM * pairs[-1][0]
    values = [v for s, v in pairs if s >= start]
    return max(values) - min(values)


def _shift(run, q):
    """|mean of percentile `q` over the last 10% of training - its mean over
    10-20%|: the drift of Fig. 1(b, c) without the evaluation-to-evaluation
    jitter that `_drift`'s range also counts."""
    pairs = _clean(run["percentiles"].get(q, []))
    if not pairs:
        return None
    end = pairs[-1][0]
    early = [v for s, v in pairs if 0.1 * end <= s <= 0.2 * end]
    late = [v for s, v in pairs if s >= 0.9 * end]
    if not early or not late:
        return None
    return abs(float(np.mean(late)) - float(np.mean(early)))


def summarize(
    runs, baseline="baseline", treatment="bn", num_test_images=10_000
):
    """The table rows, claims, curves and bands from per-run results.

    Args:
        runs: list of dicts, one per child run: `variant`, `seed`, `run_id`,
            `accuracy` (`[(step, moving-average test accuracy)]`), optional
            `accuracy_population` (float), `percentiles` (`{q: history}`),
            `params` (logged params, for `PROTOCOL_KEYS`), `correct_test`
            and `correct_tuning` (0/1 per image of the final model).
        baseline, treatment: variants without and with BN.
        num_test_images: test images behind each accuracy.

    Returns:
        dict `rows`, `claims`, `curves`, `bands`, `thresholds`, `window`.

    Raises:
        ValueError: no runs, or runs of different protocols.
    """
    if not runs:
        raise ValueError("No runs to summarize. Received: runs=[]")
    check_protocol(runs)
    groups = {}
    for run in sorted(runs, key=lambda r: int(r.get("seed") or 0)):
        groups.setdefault(run["variant"], []).append(run)
    order = [v for v in VARIANT_LABELS if v in groups]
    order += sorted(v for v in groups if v not in VARIANT_LABELS)
    rows, curves, bands = [], {}, {}
    for name in order:
        group = groups[name]
        params = group[0].get("params", {})
        accs = [_headline(r)[0] for r in group]
        moving = [_clean(r["accuracy"])[-1][1] for r in group]
        tuning = [
            np.mean(r["correct_tuning"])
            for r in group
            if r.get("correct_tuning") is not None
        ]
        row = {
            "variant": name,
            "label": VARIANT_LABELS.get(name, name),
            "binarize": params.get("data.binarize"),
            "seeds": [r.get("seed") for r in group],
            "run_ids": [r.get("run_id") for r in group],
            "steps": _clean(group[0]["accuracy"])[-1][0],
            "train_images": params.get("data.num_train_examples"),
            "test_images": num_test_images,
            "headline_source": _headline(group[0])[1],
            "test_acc": st.combined_interval(accs, num_test_images),
            "test_acc_moving": st.combined_interval(moving, num_test_images),
            "tuning_acc": st.seed_interval(tuning) if tuning else None,
            "per_run_wilson": [
                st.wilson_interval(round(a * num_test_images), num_test_images)
                for a in accs
            ],
            "steps_to": {
                str(t): _steps_to(group, t, SMOOTH_WINDOW) for t in THRESHOLDS
            },
        }
        rows.append(row)
        curves[name] = _band([r["accuracy"] for r in group], "mean")
        qs = sorted(
            {q for r in group for q in r.get("percentiles", {})}, key=float
        )
        bands[name] = {
            q: _band([r["percentiles"][q] for r in group], "median") for q in qs
        }
    claims = []
    if baseline in groups and treatment in groups:
        claims = _claims(
            groups[baseline], groups[treatment], rows, num_test_images
        )
    return {
        "rows": rows,
        "claims": claims,
        "curves": curves,
        "bands": bands,
        "thresholds": list(THRESHOLDS),
        "window": SMOOTH_WINDOW,
    }


def _claims(base, bn, rows, num_test_images):
    """The paper's orderings, each with its test and verdict (B = BN)."""
    claims = []
    ca = [r.get("correct_test") for r in base]
    cb = [r.get("correct_test") for r in bn]
    if all(c is not None for c in ca + cb):
        test = pt.hierarchical_bootstrap(np.array(ca), np.array(cb), seed=0)
        name = "bootstrap, seeds x test images"
        pairs = {r["seed"]: r["correct_test"] for r in base}
        mcn = [
            pt.mcnemar(pairs[r["seed"]], r["correct_test"])["p_value"]
            for r in bn
            if r["seed"] in pairs
        ]
        extra = {"mcnemar_p_per_seed": mcn}
    elif len(base) > 1 and len(bn) > 1:  # no per-image data: seeds only
        test = pt.seed_difference(
            [_headline(r)[0] for r in base], [_headline(r)[0] for r in bn]
        )
        name, extra = "Welch t over seeds", {}
    else:
        test = None
    if test is None:
        claims.append(
            {
                "claim": "BN ends more accurate (Alg. 2 test acc.)",
                "metric": "accuracy",
                "verdict": "not judged",
                "test": "one seed and no logged model (per-image test)",
            }
        )
    else:
        claims.append(
            _claim(
                "BN ends more accurate (Alg. 2 test acc.)",
                "accuracy",
                test,
                name,
                1,
                extra,
            )
        )
    for t in THRESHOLDS:
        sa, sb = (rows[i]["steps_to"][str(t)] for i in (0, 1))
        label = f"BN reaches {100 * t:g}% in fewer steps"
        if (
            sa["reached"] < len(base)
            or sb["reached"] < len(bn)
            or len(base) < 2
            or len(bn) < 2
        ):
            claims.append(
                {
                    "claim": label,
                    "metric": "steps",
                    "verdict": "not judged",
                    "test": f"reached {sb['reached']}/{len(bn)} (BN), "
                    f"{sa['reached']}/{len(base)} (no BN)",
                }
            )
            continue
        test = pt.seed_difference(sa["per_seed"], sb["per_seed"])
        extra = {"speed_up": sa["mean"] / sb["mean"]}
        claims.append(
            _claim(label, "steps", test, "Welch t over seeds", -1, extra)
        )
    qs = sorted(
        {q for r in base + bn for q in r.get("percentiles", {})}, key=float
    )
    measures = (
        (_drift, f"range from {100 * DRIFT_FROM:g}% of training on"),
        (_shift, "net shift, 10-20% vs. 90-100% of training"),
    )
    for q in qs:
        for measure, how in measures:
            da = [measure(r, q) for r in base]
            db = [measure(r, q) for r in bn]
            if None in da + db or len(da) < 2 or len(db) < 2:
                continue
            label = (
                f"BN keeps the sigmoid input's {float(q):g}th percentile "
                f"steadier ({how})"
            )
            extra = {"range_no_bn": float(np.mean(da))}
            extra["range_bn"] = float(np.mean(db))
            test = pt.seed_difference(da, db)
            claims.append(
                _claim(label, "range", test, "Welch t over seeds", -1, extra)
            )
    return claims


def _claim(label, metric, test, test_name, direction, extra):
    return {
        "claim": label,
        "metric": metric,
        **test,
        "test": test_name,
        "verdict": pt.verdict(
            test["difference"],
            interval=(test["lo"], test["hi"]),
            direction=direction,
        ),
        **extra,
    }
