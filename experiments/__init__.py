"""Hydra experiments tracked in MLflow: engine, data, evaluation, reports.

`convnet_repro.experiments` holds the training engine (`engine/`), the
tf.data pipelines (`data/`), the test protocols (`evaluation/`), the
figures and tables read back from MLflow (`reports/`), the dress rehearsal
of full-scale configs (`rehearsal/`) and the concept studies (`studies/`).
The command is `python -m convnet_repro.experiments.train experiment=<name>`;
docs/ARCHITECTURE.md draws the flow and each module's contract.
"""
