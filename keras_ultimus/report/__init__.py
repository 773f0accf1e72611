"""Reports on training runs and searches: `python -m keras_ultimus.report --help`.

One job per module, and importing this package imports no Keras, so the CLI
can set up the process first:

- `runs`: read and check a run folder's `log.csv` and `run.json`.
- `evaluate`: evaluate a saved model on the test split; re-check its logged accuracy.
- `tables`: the Markdown tables and number formats.
- `charts`: the PNG charts.
- `markdown`: write a run report's `report.md`.
- `search`: read a tuner search folder and write its report.
- `cli`: the command line (`main`).
"""
