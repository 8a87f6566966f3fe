"""Reports: read finished MLflow runs, write figures and tables.

One module per experiment (`experiments/reports/<experiment>.py`), each with a
`report(cfg, parent_run_id, ...)` function named by the experiment config's
`report._target_`.
"""
