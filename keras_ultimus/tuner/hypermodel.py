"""The Ultimus search space as a KerasTuner `HyperModel`, trained with the shared recipe."""

import json
import os
import time
from collections.abc import Sequence
from contextlib import nullcontext

import keras
import keras_tuner as kt
import numpy as np

from keras_ultimus.config import (
    FIELDS,
    RecipeOptions,
    check_config,
    check_settings,
    default_config,
    model_kwargs,
)
from keras_ultimus.constants import DOWNSAMPLE
from keras_ultimus.datasets.batching import batches_per_epoch
from keras_ultimus.datasets.pipelines import resolve
from keras_ultimus.fields import check_range, check_value
from keras_ultimus.models.saving import save_for_inference
from keras_ultimus.models.ultimus import build_model, trainable_params
from keras_ultimus.models.whitening import set_whitening
from keras_ultimus.runs.folder import CSV_NAME, MODEL_NAME
from keras_ultimus.training import checkpoints, compiling, recipe
from keras_ultimus.training.callbacks import OrderedCSVLogger
from keras_ultimus.training.fitting import fit_arrays

FIT_NAME = (
    "fit.json"  # per trial: who ran it, for how long, how big the model was, how it was trained
)
MAX_CONVS = 6
WIDTHS = (16, 32, 48, 64, 96, 128, 192, 256)
REFERENCE_WIDTHS = tuple(default_config()["conv_widths"])
# The search spaces: what each searched run setting ranges over. Its type, default (the reference's) and allowed
# range are its field's in keras_ultimus.config: an (low, high) pair is an Int, or a log-sampled Float; a list, the
# values to choose from; None, all of a bool's or a choice field's values. "reference" searches the model and peak LR
# around the reference, and the conv stem (`declare_space`); "wide" adds the residual stem, max pooling, the
# whitening conv and the recipe options (keras_ultimus.config.RecipeOptions).
REFERENCE_AXES = {
    "num_blocks": (1, 8),
    "key_dim": [4, 8, 16],
    "scale": None,
    "residual": None,
    "max_lr": (3e-4, 1e-2),
}
WIDE_AXES = {
    "stem": None,
    "pooling": None,
    "label_smoothing": [0.0, 0.1, 0.2],
    "weight_decay": [0.0, 0.004, 0.04],
    "ema": [0.0, 0.99],
    "whiten": None,
}
# Run-config keys that size the search or say where it ran, not what it trained: `best.json` leaves them to
# `train`'s defaults, so it trains in full on any machine (a search's resolved "tfdata" would fail without TF).
BUDGET_KEYS = (
    "epochs",
    "limit_train",
    "limit_test",
    "data",
    "pipeline",
    "jit",
    "distribute",
    "devices",
)


def declare_axis(hp: kt.HyperParameters, name: str, axis: tuple | list | None) -> None:
    """Declare the run setting `name` over `axis`, its default the setting's; values outside its range raise."""
    f = FIELDS[name]
    kind, choices = f.metadata["kind"], f.metadata["choices"]
    for value in axis or ():
        check_range(f, check_value(f, value, "search space"))
    if kind == "bool":
        hp.Boolean(name, default=f.default)
    elif axis is None:
        hp.Choice(name, list(choices), default=f.default)
    elif isinstance(axis, list):
        hp.Choice(name, axis, default=f.default)
    elif kind == "int":
        hp.Int(name, *axis, default=f.default)
    else:
        hp.Float(name, *axis, sampling="log", default=f.default)


def declare_space(hp: kt.HyperParameters, space: str = "reference") -> None:
    """Declare every searched axis of `space`; the defaults are the reference model and recipe."""
    for name, axis in REFERENCE_AXES.items():
        declare_axis(hp, name, axis)
    hp.Int("num_convs", 2, MAX_CONVS, default=len(REFERENCE_WIDTHS))
    for i in range(1, MAX_CONVS + 1):
        # Conv i, and the gap before it, exist when num_convs >= i.
        scope = (
            hp.conditional_scope("num_convs", list(range(i, MAX_CONVS + 1)))
            if i > 2
            else nullcontext()
        )
        with scope:
            default = REFERENCE_WIDTHS[i - 1] if i <= len(REFERENCE_WIDTHS) else 64
            hp.Choice(f"conv{i}_width", list(WIDTHS), default=default)
            if i > 1:
                hp.Choice(f"down{i - 1}", list(DOWNSAMPLE), default="none")
    if space == "wide":
        for name, axis in WIDE_AXES.items():
            declare_axis(hp, name, axis)


def searched_values(values: dict) -> dict:
    """The run-config keys a trial's hyperparameter values set (the leaderboard's columns)."""
    n = int(values["num_convs"])
    config = {k: values[k] for k in REFERENCE_AXES}
    config["conv_widths"] = [int(values[f"conv{i}_width"]) for i in range(1, n + 1)]
    config["downsample"] = [values[f"down{i}"] for i in range(1, n)]
    config.update({k: values[k] for k in WIDE_AXES if k in values})
    if config.get("stem") == "resnet":
        config["downsample"] = None  # every residual stage pools
    return config


def trial_config(values: dict, settings: dict | None = None) -> dict:
    """A trial as a run config: `train`'s defaults, then the search's `settings`, then the trial's values.

    Checked as `--config` is (`keras_ultimus.training.run_config`), so a trial trains from the same object a `train`
    run does, and `best.json` is a `train --config` file as it is.
    """
    return check_settings(
        {**default_config(), **(settings or {}), **searched_values(values)},
        "trial config",
        "trial config",
    )


def budget_reason(values: dict, max_params: int) -> str | None:
    """Why a trial's values must not be trained (an impossible stem, or over the parameter budget), else None."""
    config = trial_config(values)
    try:
        params = trainable_params(**model_kwargs(config))
    except ValueError as e:
        return f"invalid: {e}"
    if params > max_params:
        return f"over budget: {params:,} trainable parameters > {max_params:,}"
    return None


class UltimusHyperModel(kt.HyperModel):
    """Ultimus models over depth, key size, scale, residual, peak LR and the conv stem.

    The stem has 2-6 convs, each of a width from `WIDTHS`, with `"none"`,
    `"pool"` or `"stride"` between two convs (`keras_ultimus.models.ultimus.build_model`).
    Each trial trains as `keras_ultimus.train` trains: the shared recipe
    (`compiling.compile_model`: Adam on a one-cycle schedule over the trial's
    own epochs), the shared input pipelines (`keras_ultimus.datasets.pipelines`), and
    the same per-epoch CSV log, written into the trial's folder.

    Args:
        plan: a `keras_ultimus.training.distribute.Plan` whose scope each trial builds,
            compiles and fits in. Defaults to `None` (one device).
        space: str. `"reference"` or `"wide"` (see `SPACES`). Defaults to `"reference"`.
        **settings: the run settings every trial shares, by their run-config keys (`batch_size=`,
            `seed=`, `precision=`, `jit=`, `pipeline=`, ...), checked as `--config` checks them;
            the others are `train`'s defaults.
    """

    def __init__(self, plan=None, space: str = "reference", **settings):
        super().__init__(name="ultimus")
        # The run-config keys every trial shares; `trial_config` adds each trial's own values.
        self.settings = check_settings(settings, "UltimusHyperModel", "UltimusHyperModel")
        check_config(self.settings)
        self.plan = plan
        self.space = space

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        """Build an uncompiled Ultimus model; `fit` compiles it once the step count is known."""
        declare_space(hp, self.space)
        config = trial_config(hp.values, self.settings)
        recipe.seed_everything(config["seed"])
        keras.config.set_dtype_policy(config["precision"])  # this process builds trial models only
        with self._scope():
            return build_model(**model_kwargs(config))

    def _scope(self):
        return self.plan.scope() if self.plan is not None else nullcontext()

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
        trial_folder: str | None = None,
    ) -> keras.callbacks.History:
        """Train the trial from scratch over `epochs` epochs, its one-cycle schedule spanning all of them.

        `trial_folder` (where its log and fit.json go) is passed by `UltimusTuner.run_trial`.
        """
        if trial_folder is None:
            raise kt.errors.FatalValueError(
                "UltimusHyperModel.fit needs trial_folder=, which keras_ultimus.tuner.search.UltimusTuner passes"
            )
        if initial_epoch:
            # A continuation would either restart the one-cycle schedule or cut it short: refuse both.
            raise kt.errors.FatalValueError(
                "UltimusHyperModel trains every trial from epoch 0 with its own one-cycle schedule; "
                f"got initial_epoch={initial_epoch} (use keras_ultimus.tuner.search.UltimusTuner)"
            )
        start = time.perf_counter()
        folder = trial_folder
        config = {**trial_config(hp.values, self.settings), "epochs": epochs}
        pipeline = resolve(config["pipeline"])
        steps = batches_per_epoch(len(x), config["batch_size"]) * epochs
        options = RecipeOptions.from_config(config)
        with self._scope():
            set_whitening(model, x)
            compiling.compile_model(
                model, config["max_lr"], steps, config["pct_start"], config["jit"], options
            )
        tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "tuner0")
        print(
            f"{tuner_id}: trial {os.path.basename(folder)} epochs {epochs}: {searched_values(hp.values)}"
        )
        csv = OrderedCSVLogger(os.path.join(folder, CSV_NAME))
        with self._scope():
            history = fit_arrays(
                model,
                x,
                y,
                batch_size=config["batch_size"],
                seed=config["seed"],
                augment=config["augment"],
                pipeline=pipeline,
                epochs=epochs,
                options=options,
                validation=validation_data,
                callbacks=[csv, *callbacks],
                verbose=verbose,
            )
            with checkpoints.portable_batchnorm(
                model
            ):  # the trial folder predicts and exports as a run folder does
                save_for_inference(model, os.path.join(folder, MODEL_NAME))
        record = {
            "tuner_id": tuner_id,
            "trainable_params": trainable_params(**model_kwargs(config)),
            "epochs_run": len(history.epoch),
            "schedule_steps": steps,
            "seconds": round(time.perf_counter() - start, 1),
            "precision": config["precision"],
            "jit_compile": bool(model.jit_compile),
            "pipeline": pipeline,
            "config": config,
        }
        with open(os.path.join(folder, FIT_NAME), "w") as f:
            json.dump(record, f)
        return history
