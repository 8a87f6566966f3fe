"""Per-image intervals and paired tests for the ImageNet results table.

Each evaluation run stores its per-image class probabilities and top-1 /
top-5 hits (`experiments.evaluation.records`: `predictions/
probabilities.npy`, `labels.npy`, `top_k_hits.npy`). From the hits, the
ones the row's error counted, this module gives every table row a per-row
bootstrap interval of its top-1 and top-5 error, and every ordering check of
`imagenet_orderings.check_orderings` a paired test on the paper table's own
metric: exact McNemar on per-image correctness and a paired bootstrap of
the error difference (`experiments.reports.paired_tests`), with a verdict
"holds" / "not significant" / "fails". Top-5 with at most 10 classes is
weak (guessing 5 of 10 is right half the time), so such a check is marked
"weak (top-5 of <= 10 classes), not judged" and never judged.
"""

import os
import tempfile

import numpy as np

from convnet_repro.experiments.engine import metric_keys as mk
from convnet_repro.experiments.reports import paired_tests as pt
from convnet_repro.experiments.reports import statistics as st

WEAK_TOP5_CLASSES = 10  # top-5 of this many classes or fewer: not judged
NOT_JUDGED = "not judged"
N_RESAMPLES = 2000


def from_probabilities(probabilities, labels):
    """Per-image top-k hits of stored probabilities, in the form
    `Correctness`'s loader returns (`{"hits", "labels", "classes"}`).

    Only for prediction folders logged before the hits were stored: their
    float16 probabilities can tie where the full-precision scores did not,
    so a few images may count differently from the row's error.
    """
    from convnet_repro.experiments.evaluation import scoring

    p = np.asarray(probabilities, dtype=np.float32)
    return {
        "hits": scoring.top_k_hits(p, labels),
        "labels": np.asarray(labels),
        "classes": p.shape[1],
    }


class Correctness:
    """Loads and caches per-image correctness of evaluation runs.

    Args:
        loader: `run_id -> {"hits": (N, 2) top-1/top-5 hits, "labels",
            "classes"}` or `None` when the run stored no predictions;
            default reads the MLflow artifacts.
    """

    def __init__(self, loader=None):
        self._loader = loader or _mlflow_predictions
        self._cache = {}

    def get(self, run_id):
        """`{"top1_error": 0/1 wrong, "top5_error": ..., "labels",
        "classes"}` per image, or None without stored predictions."""
        if run_id not in self._cache:
            loaded = self._loader(run_id) if run_id else None
            if loaded is None:
                self._cache[run_id] = None
            else:
                hits = np.asarray(loaded["hits"])
                self._cache[run_id] = {
                    "top1_error": 1 - hits[:, 0],
                    "top5_error": 1 - hits[:, 1],
                    "labels": np.asarray(loaded["labels"]),
                    "classes": int(loaded["classes"]),
                }
        return self._cache[run_id]


def folder_predictions(folder):
    """A prediction folder (`store.PredictionWriter`) as `Correctness`'s
    loader returns it: its stored hits, or hits re-ranked from its
    probabilities when it predates them (`from_probabilities`)."""
    from convnet_repro.experiments.evaluation import store

    path = os.path.join(folder, store.PROBABILITIES)
    labels = np.load(os.path.join(folder, store.LABELS))
    hits = store.read_hits(folder)
    if hits is None:
        return from_probabilities(
            np.concatenate(list(store.read_chunks(path))), labels
        )
    classes = np.load(path, mmap_mode="r").shape[1]
    return {"hits": hits, "labels": labels, "classes": classes}


def _mlflow_predictions(run_id):
    from convnet_repro.experiments.evaluation import records

    with tempfile.TemporaryDirectory() as tmp:
        try:
            folder = records.stored_predictions(run_id, tmp)
        except (ValueError, OSError):
            return None
        return folder_predictions(folder)


def row_intervals(row, correctness):
    """Per-row 95% bootstrap intervals (in %) of top-1 and top-5 error.

    Returns:
        dict `{metric: (lo, hi)}`, empty without stored predictions.
    """
    c = correctness.get(row.run_id)
    if c is None:
        return {}
    out = {}
    for metric in ("top1_error", "top5_error"):
        r = st.bootstrap_interval(c[metric], n_resamples=N_RESAMPLES, seed=0)
        out[metric] = (100 * r["lo"], 100 * r["hi"])
    return out


def member_summary(errors, num_models):
    """An ensemble's members alone: mean, 95% t-interval, min and max.

    Args:
        errors: each member's own top-1 error (percent) as logged; members
            without one are left out.
        num_models: the ensemble's size (`of`, to show how many of its
            members were found).

    Returns:
        dict `mean`, `std`, `n`, `lo`, `hi` (`statistics.seed_interval`),
        `min`, `max`, `of`; None without any member error.
    """
    if not errors:
        return None
    summary = st.seed_interval(errors)
    return {**summary, "min": min(errors), "max": max(errors), "of": num_models}


def judge(check, correctness, weak_top5=False):
    """Adds a paired test and a verdict to one ordering check (in place).

    Args:
        check: a dict of `imagenet_orderings.check_orderings` (`metric`,
            `better_run_id`, `worse_run_id`: the papers say `better` has
            the lower error).
        correctness: a `Correctness`.
        weak_top5: top-5 is weak whatever the stored predictions say (the
            mini table: 10 classes), so a top-5 check is never judged even
            without stored predictions.

    Returns:
        `check`, with `verdict` and, when judged, `difference` (better -
        worse error, %), `lo`, `hi`, `p_mcnemar`, `p_bootstrap`; `weak`
        True on a weak top-5 check.
    """
    a = correctness.get(check.get("worse_run_id"))
    b = correctness.get(check.get("better_run_id"))
    metric = check["metric"]
    few = a is not None and b is not None
    few = few and min(a["classes"], b["classes"]) <= WEAK_TOP5_CLASSES
    if metric == mk.TOP5_ERROR and (weak_top5 or few):
        check["weak"] = True
        check["verdict"] = (
            f"weak (top-5 of <= {WEAK_TOP5_CLASSES} classes), {NOT_JUDGED}"
        )
        return check
    if a is None or b is None:
        check["verdict"] = f"{NOT_JUDGED} (no stored predictions)"
        return check
    if not np.array_equal(a["labels"], b["labels"]):
        check["verdict"] = f"{NOT_JUDGED} (different images)"
        return check
    # Paired on the same images: B = better row; error falls if it holds.
    boot = pt.paired_bootstrap(
        a[metric], b[metric], n_resamples=N_RESAMPLES, seed=0
    )
    mcn = pt.mcnemar(1 - a[metric], 1 - b[metric])
    check.update(
        difference=100 * boot["difference"],
        lo=100 * boot["lo"],
        hi=100 * boot["hi"],
        p_mcnemar=mcn["p_value"],
        p_bootstrap=boot["p_value"],
        verdict=pt.verdict(
            boot["difference"],
            p_value=mcn["p_value"],
            interval=(boot["lo"], boot["hi"]),
            direction=-1,
        ),
    )
    return check
