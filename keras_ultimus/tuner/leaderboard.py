"""A search's leaderboard (one row per trial, then the configurations not trained) and the best trial's config."""

import json
from pathlib import Path

import keras_tuner as kt
import pandas as pd

from keras_ultimus.runs.folder import (
    SKIPPED,
)
from keras_ultimus.tuner.hypermodel import (
    BUDGET_KEYS,
    FIT_NAME,
    searched_values,
    trial_config,
)


def _config_columns(values: dict) -> dict:
    config = searched_values(values)
    config["conv_widths"] = ",".join(map(str, config["conv_widths"]))
    config["downsample"] = ",".join(config["downsample"] or [])
    return config


def leaderboard(tuner: kt.Tuner) -> pd.DataFrame:
    """One row per oracle trial, best `val_accuracy` first, then the configurations not trained, with why."""
    rows = []
    for trial in tuner.oracle.trials.values():
        fit_file = Path(tuner.get_trial_dir(trial.trial_id)) / FIT_NAME
        fit = json.loads(fit_file.read_text()) if fit_file.exists() else {}
        values = trial.hyperparameters.values
        rows.append(
            {
                "trial_id": trial.trial_id,
                "status": trial.status,
                "reason": (trial.message or "").strip().splitlines()[-1:][0]
                if trial.message
                else "",
                **_config_columns(values),
                **{
                    k: v for k, v in values.items() if k.startswith("tuner/")
                },  # Hyperband's bookkeeping
                "trainable_params": fit.get("trainable_params"),
                "best_val_accuracy": trial.score,
                "epochs_run": fit.get("epochs_run"),
                "seconds": fit.get("seconds"),
                "tuner_id": fit.get("tuner_id"),
            }
        )
    stats = ["trainable_params", "best_val_accuracy", "epochs_run", "seconds", "tuner_id"]
    trained = pd.DataFrame(rows, columns=list(rows[0]) if rows else ["trial_id", *stats])
    trained = trained.sort_values(
        ["best_val_accuracy", "trial_id"], ascending=[False, True], na_position="last"
    )
    skipped = [
        {
            "trial_id": "",
            "status": SKIPPED,
            "reason": s["reason"],
            **_config_columns(s["values"]),
            "trainable_params": s.get("trainable_params"),
        }
        for s in getattr(tuner.oracle, "skipped", [])
    ]
    table = pd.concat([trained, pd.DataFrame(skipped)], ignore_index=True) if skipped else trained
    extra = sorted(c for c in table.columns if c.startswith("tuner/"))
    config = [c for c in table.columns if c not in {"trial_id", "status", "reason", *extra, *stats}]
    return table.reindex(
        columns=["trial_id", "status", "reason", *config, *extra, *stats]
    ).reset_index(drop=True)


def best_config(values: dict, settings: dict) -> dict:
    """The best trial's run config, for `train --config`: all but the search's budget and machine (`BUDGET_KEYS`)."""
    return {k: v for k, v in trial_config(values, settings).items() if k not in BUDGET_KEYS}
