"""The Ultimus search space as a KerasTuner `HyperModel`."""

import json
import os
import time
from collections.abc import Sequence

import keras
import keras_tuner as kt
import numpy as np

from keras_ultimus.data import make_dataset
from keras_ultimus.model import build_model
from keras_ultimus.recipe import CSV_NAME, EpochStats, compile_model

FIT_NAME = "fit.json"  # per trial: who ran it, for how long, how big the model was
# Hyperparameter names are `keras_ultimus.train` flag dests, so the best values
# become a `--config` file as they are.
SPACE = ("num_blocks", "key_dim", "residual", "scale", "max_lr", "conv_widths")


def widths_to_str(widths: Sequence[int]) -> str:
    """Conv widths as one hyperparameter value, e.g. `"32,256,48"`."""
    return ",".join(str(int(w)) for w in widths)


def str_to_widths(text: str) -> list[int]:
    """Inverse of `widths_to_str`."""
    return [int(w) for w in text.split(",")]


def trial_dir(callbacks: Sequence[keras.callbacks.Callback]) -> str:
    """The running trial's folder, found through the callback KerasTuner adds to every fit."""
    tuner_callback = next(c for c in callbacks if hasattr(c, "tuner") and hasattr(c, "trial"))
    return tuner_callback.tuner.get_trial_dir(tuner_callback.trial.trial_id)


class UltimusHyperModel(kt.HyperModel):
    """Ultimus models over depth, key size, residual, scale, peak LR and conv widths.

    Models are built by `keras_ultimus.build_model` and trained exactly as
    `keras_ultimus.train` trains them: the same `tf.data` pipeline, Adam on
    the one-cycle schedule (`compile_model`), and the same per-epoch CSV log
    (`EpochStats` + `CSVLogger`), written into each trial's folder.

    Args:
        conv_widths: sequence of `"w1,w2,w3"` strings. One value fixes the
            conv widths; several make them a searched choice.
            Defaults to the reference widths `("32,256,48",)`.
        batch_size: int. Training batch size. Defaults to `512`.
        pct_start: float. One-cycle warm-up fraction. Defaults to `0.25`.
        augment: bool. Crop/flip augmentation while training. Defaults to `True`.
        seed: int. Seed for weight init, shuffling and augmentation. Defaults to `0`.
    """

    def __init__(
        self,
        conv_widths: Sequence[str] = ("32,256,48",),
        batch_size: int = 512,
        pct_start: float = 0.25,
        augment: bool = True,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(name="ultimus", **kwargs)
        self.conv_widths = list(conv_widths)
        self.batch_size = batch_size
        self.pct_start = pct_start
        self.augment = augment
        self.seed = seed

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        """Build an uncompiled Ultimus model; `fit` compiles it once the step count is known."""
        keras.utils.set_random_seed(self.seed)
        if len(self.conv_widths) > 1:
            widths = hp.Choice("conv_widths", self.conv_widths)
        else:
            widths = hp.Fixed("conv_widths", self.conv_widths[0])
        # Declared here so that every oracle samples it from the start; used in `fit`.
        hp.Float("max_lr", 3e-4, 1e-2, sampling="log", default=3e-3)
        return build_model(
            num_blocks=hp.Int("num_blocks", 1, 8, default=4),
            key_dim=hp.Choice("key_dim", [4, 8, 16], default=8),
            residual=hp.Boolean("residual", default=False),
            scale=hp.Choice("scale", ["pre", "post"], default="pre"),
            conv_widths=str_to_widths(widths),
        )

    def fit(
        self,
        hp: kt.HyperParameters,
        model: keras.Model,
        x: np.ndarray,
        y: np.ndarray,
        validation_data: tuple[np.ndarray, np.ndarray],
        epochs: int = 1,
        initial_epoch: int = 0,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        verbose="auto",
    ) -> keras.callbacks.History:
        """Compile with the one-cycle Adam of `keras_ultimus.train` and train on the arrays."""
        start = time.perf_counter()
        folder = trial_dir(callbacks)
        train_ds = make_dataset(x, y, self.batch_size, True, self.augment, self.seed)
        val_ds = make_dataset(*validation_data, self.batch_size)
        # A Hyperband continuation (initial_epoch > 0) starts from the weights of an
        # earlier trial with a fresh optimizer, so it runs its own full cycle.
        steps = -(-len(x) // self.batch_size) * (epochs - initial_epoch)
        compile_model(model, hp.get("max_lr"), steps, self.pct_start)
        tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "tuner0")
        print(f"{tuner_id}: trial {os.path.basename(folder)} epochs {initial_epoch}-{epochs}: {hp.values}")
        csv = keras.callbacks.CSVLogger(os.path.join(folder, CSV_NAME))
        history = model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=epochs,
            initial_epoch=initial_epoch,
            callbacks=[EpochStats(), csv, *callbacks],
            verbose=verbose,
        )
        record = {
            "tuner_id": tuner_id,
            "trainable_params": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
            "epochs_run": len(history.epoch),
            "seconds": round(time.perf_counter() - start, 1),
        }
        with open(os.path.join(folder, FIT_NAME), "w") as f:
            json.dump(record, f)
        return history
