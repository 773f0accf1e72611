"""KerasTuner search over the Ultimus family: `python -m keras_ultimus.tuner.tune --help`.

- `hypermodel`: the search space and how one trial trains (the shared recipe and pipelines).
- `search`: oracles within a parameter budget, the tuner, and the files a search folder holds.
- `tune`: the search CLI; `launch`: a chief and N workers on one machine.

Importing this package imports no Keras.
"""
