"""Data pipelines: `make_datasets` (train/val `tf.data`) and `eval_views`.

`conf/data/<name>.yaml` instantiates `experiments.data.make_datasets`;
`python -m convnet_repro.experiments.data [name ...]` (`make data-check`)
checks them.
"""

from convnet_repro.experiments.data.augment import POLICIES
from convnet_repro.experiments.data.augment import build_policy
from convnet_repro.experiments.data.eval_views import PROTOCOLS
from convnet_repro.experiments.data.eval_views import eval_views
from convnet_repro.experiments.data.idx_format import read_idx
from convnet_repro.experiments.data.pipeline import DATASETS
from convnet_repro.experiments.data.pipeline import make_datasets
from convnet_repro.experiments.engine.exit_codes import MissingDataError

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
