"""The one fit wiring that `train`, `keras_ultimus.fit`, the tuner, the LR range test and the bench share."""

import sys
from collections.abc import Sequence

import keras
import numpy as np

from keras_ultimus.config import RecipeOptions
from keras_ultimus.datasets.pipelines import eval_data, train_data
from keras_ultimus.training.callbacks import CompileTime, EpochStats, recipe_callbacks


def progress_bars() -> bool:
    """Whether Keras' progress bars read well here: on a terminal or in a notebook, not in a log file."""
    return sys.stdout.isatty() or "ipykernel" in sys.modules


def fit_arrays(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int,
    seed: int,
    augment: bool = True,
    pipeline: str,
    epochs: int = 1,
    options: RecipeOptions | None = None,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: str | int = 0,
    **fit_args,
) -> keras.callbacks.History:
    """Fit `model` on uint8 arrays through a `pipeline` that shuffles and augments by (seed, epoch).

    The pipeline's epoch callback comes first, so each epoch's data is a function of (seed, epoch), also on resume;
    with `options`, the recipe's callbacks (the EMA swap), the epoch timer and, for a compiled step, the compile
    time follow; then `callbacks`.
    """
    train_ds, data_epoch = train_data(x, y, batch_size, seed, augment, kind=pipeline)
    val_ds = eval_data(*validation, batch_size, kind=pipeline) if validation is not None else None
    recipe = [*recipe_callbacks(options), EpochStats()] if options is not None else []
    if options is not None and model.jit_compile is True:
        recipe.append(CompileTime())
    if verbose == "auto":
        verbose = 1 if progress_bars() else 2  # in a log file, one plain line per epoch
    return model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=epochs,
        shuffle=False,  # the pipeline shuffles, by (seed, epoch); fit's shuffle would reorder NumPy batches
        callbacks=[data_epoch, *recipe, *callbacks],
        verbose=verbose,
        **fit_args,
    )
