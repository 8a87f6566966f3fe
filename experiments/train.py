"""`python -m convnet_repro.experiments.train`: the user-facing command.

The engine lives in `experiments.engine` (`experiments.engine.train.train`
for code); this module only keeps the documented command short.
"""

from convnet_repro.experiments.engine.train import main  # noqa: F401
from convnet_repro.experiments.engine.train import train  # noqa: F401

if __name__ == "__main__":
    from convnet_repro.experiments.engine.train import _cli

    _cli()
