"""The training engine: config -> data/model/optimizer -> `fit` -> MLflow.

Entry point `experiments.engine.train.train(cfg)` (`python -m
experiments.train` on the command line). See `docs/ARCHITECTURE.md` for the
one-line job of each module.
"""
