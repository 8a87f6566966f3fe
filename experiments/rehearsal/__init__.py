"""Dress rehearsal of the full-scale experiments (issue #12).

`python -m convnet_repro.experiments.rehearse experiment=<name>` runs a paper
config with
only `conf/debug/rehearsal.yaml` overridden (batch, steps, image counts):
train -> checkpoint -> kill -> resume -> evaluate -> report row, printing a
pass/fail line per stage and the step time. See `stages.rehearse`.
"""

from convnet_repro.experiments.rehearsal.stages import Stage
from convnet_repro.experiments.rehearsal.stages import rehearse

__all__ = ["Stage", "rehearse"]
