"""KerasTuner search over the Ultimus model: `python -m tuner.tune --help`."""
