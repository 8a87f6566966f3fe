"""`python -m experiments.train experiment=<name>`: the user-facing command.

The engine lives in `experiments.engine` (`experiments.engine.train.train`
for code); this module only keeps the documented command short.
"""

from experiments.engine.train import main  # noqa: F401
from experiments.engine.train import train  # noqa: F401

if __name__ == "__main__":
    from experiments.engine.train import _cli

    _cli()
