"""Dress rehearsal of the full-scale experiments (issue #12).

`python -m experiments.rehearse experiment=<name>` runs a paper config with
only `conf/debug/rehearsal.yaml` overridden (batch, steps, image counts):
train -> checkpoint -> kill -> resume -> evaluate -> report row, printing a
pass/fail line per stage and the step time. See `stages.rehearse`.
"""

from experiments.rehearsal.stages import Stage
from experiments.rehearsal.stages import rehearse

__all__ = ["Stage", "rehearse"]
