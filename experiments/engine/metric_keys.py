"""The metric-key contract: every MLflow metric name the engine logs.

Written by the engine, read by the reports, the evaluation hook, the
rehearsal checks and the tests; each imports its keys from here rather than
spelling them.

Training runs (step = the global optimizer step, 1-based):

- `callbacks.StepLogger`, every `trainer.log_every_steps`: `train/loss`,
  `train/top1_accuracy`, `train/top1_error`, `train/top{k}_accuracy`,
  `train/top{k}_error` (means over the last window; `k = trainer.top_k`,
  top-k keys only when `k > 1`) and `lr`;
- `callbacks.StepLogger`, every `trainer.eval_every_steps`, and
  `fit._final_scores` at `trainer.steps`: `val/loss`,
  `val/top1_accuracy`, `val/top1_error`, `val/top{k}_*` (one pass over
  the validation set; every `*_error` is `1 - *_accuracy`);
- `fit._final_scores`, with `trainer.bn_population_stats`, at
  `trainer.steps`: each `val/*` key + `_population` (BN Alg. 2 statistics).

Multi-run parents (`children.py`, step = `trainer.steps`): `mean/<key>`
for every final `val/*` key all children hold; `compare.py`:
`curve/<key>/<variant>`, the seed-mean curve of a `val/*` key.

Evaluation runs (`experiments.evaluation.records`, tag `kind=evaluation`):
`top1_error`, `top5_error` in percent, no prefix.

Keys are built by the functions below (`val_key("top1_accuracy")`), so a
new metric needs no new constant. Considered: `mlflow.keras.MlflowCallback`
logs Keras' own log names (`val_accuracy`) per epoch; the engine logs at
global steps with top-k errors and resume de-duplication, so it names its
keys itself.
"""

TRAIN_PREFIX = "train/"
VAL_PREFIX = "val/"
MEAN_PREFIX = "mean/"
CURVE_PREFIX = "curve/"
POPULATION_SUFFIX = "_population"

LOSS = "loss"
TOP1_ACCURACY = "top1_accuracy"
TOP1_ERROR = "top1_error"
TOP5_ACCURACY = "top5_accuracy"
TOP5_ERROR = "top5_error"
LR = "lr"


def accuracy_name(k):
    """`top{k}_accuracy`, the compiled metric's name."""
    return f"top{k}_accuracy"


def error_name(accuracy):
    """`"top1_accuracy"` -> `"top1_error"` (the engine logs `1 - acc`)."""
    if not accuracy.endswith("_accuracy"):
        raise ValueError(
            "Only an `*_accuracy` name has an error. "
            f"Received: accuracy={accuracy!r}"
        )
    return accuracy[: -len("_accuracy")] + "_error"


def train_key(name):
    """`train/<name>`: a windowed training metric."""
    return TRAIN_PREFIX + name


def val_key(name):
    """`val/<name>`: a validation metric."""
    return VAL_PREFIX + name


def population_key(key):
    """`<key>_population`: `key` after BN population statistics."""
    return key + POPULATION_SUFFIX


def mean_key(key):
    """`mean/<key>`: a parent run's mean over its children."""
    return MEAN_PREFIX + key


def curve_key(key, variant):
    """`curve/<key>/<variant>`: a parent run's seed-mean curve."""
    return f"{CURVE_PREFIX}{key}/{variant}"


TRAIN_LOSS = train_key(LOSS)
VAL_LOSS = val_key(LOSS)
VAL_TOP1_ACCURACY = val_key(TOP1_ACCURACY)
VAL_TOP1_ERROR = val_key(TOP1_ERROR)
VAL_TOP5_ACCURACY = val_key(TOP5_ACCURACY)
VAL_TOP5_ERROR = val_key(TOP5_ERROR)


def training_run_keys(top_k=5, population=False):
    """Every key a finished training run holds, for `trainer.top_k`.

    Args:
        top_k: `trainer.top_k` (top-k keys only when > 1).
        population: `trainer.bn_population_stats`.

    Returns:
        sorted list of keys.
    """
    names = [TOP1_ACCURACY, TOP1_ERROR]
    if top_k > 1:
        names += [accuracy_name(top_k), error_name(accuracy_name(top_k))]
    train = [train_key(n) for n in [LOSS, *names]]
    val = [val_key(n) for n in [LOSS, *names]]
    pop = [population_key(k) for k in val] if population else []
    return sorted([*train, LR, *val, *pop])


def is_run_key(key):
    """Whether `key` is a key of this contract (any `top_k`).

    Accepts the training keys (`train/*`, `val/*`, `lr`), their
    `_population` and `mean/` forms, and `curve/<val key>/<variant>`.
    """
    if key.startswith(CURVE_PREFIX):
        inner, _, variant = key[len(CURVE_PREFIX) :].rpartition("/")
        return (
            bool(variant)
            and inner.startswith(VAL_PREFIX)
            and (is_run_key(inner))
        )
    if key.startswith(MEAN_PREFIX):
        key = key[len(MEAN_PREFIX) :]
        if not key.startswith(VAL_PREFIX):
            return False
    if key == LR:
        return True
    prefix = next(
        (p for p in (TRAIN_PREFIX, VAL_PREFIX) if key.startswith(p)), None
    )
    if prefix is None:
        return False
    name = key[len(prefix) :]
    if prefix == VAL_PREFIX and name.endswith(POPULATION_SUFFIX):
        name = name[: -len(POPULATION_SUFFIX)]
    return name == LOSS or _is_topk_name(name)


def _is_topk_name(name):
    for tail in ("_accuracy", "_error"):
        if name.startswith("top") and name.endswith(tail):
            return name[3 : -len(tail)].isdigit()
    return False
