"""Concept studies (issue #8): DL book ch. 9 ideas measured on real data.

One module per study, each with `run(cfg) -> dict` and a Hydra `main`
(`python -m convnet_repro.experiments.studies.<name>`, config
`conf/study/<name>.yaml`,
MLflow experiment `study-<name>`, outputs in `results/studies/<name>/`).
"""

STUDIES = (
    "conv_vs_correlation",
    "edge_efficiency",
    "parameter_sharing",
    "equivariance",
    "variable_size_pooling",
    "structured_output",
    "first_layer_filters",
)
