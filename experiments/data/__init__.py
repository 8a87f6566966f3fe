"""Data pipelines: `make_datasets` (train/val `tf.data`) and `eval_views`.

`conf/data/<name>.yaml` instantiates `experiments.data.make_datasets`;
`python -m experiments.data [name ...]` (`make data-check`) checks them.
"""

from experiments.data.augment import POLICIES
from experiments.data.augment import build_policy
from experiments.data.eval_views import PROTOCOLS
from experiments.data.eval_views import eval_views
from experiments.data.idx_format import read_idx
from experiments.data.pipeline import DATASETS
from experiments.data.pipeline import make_datasets
from experiments.engine.exit_codes import MissingDataError

__all__ = [
    "DATASETS",
    "POLICIES",
    "PROTOCOLS",
    "MissingDataError",
    "build_policy",
    "eval_views",
    "make_datasets",
    "read_idx",
]
