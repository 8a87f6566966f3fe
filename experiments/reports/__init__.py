"""Reports: read finished MLflow runs, write figures and tables.

One module per experiment (`experiments/reports/<experiment>.py`), each with a
`report(cfg, parent_run_id, ...)` function named by the experiment config's
`report._target_`.
"""

import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def resolve_dir(path):
    """`path` as given when absolute, else relative to the repository."""
    path = pathlib.Path(path)
    return path if path.is_absolute() else REPO_ROOT / path
