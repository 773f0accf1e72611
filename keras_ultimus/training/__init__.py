"""Training: run settings, the recipe (optimizer, schedule, loss, callbacks), run folders and `fit`."""
