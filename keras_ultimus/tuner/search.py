"""The search itself: KerasTuner oracles with a parameter budget, the tuner, and the files a search writes.

A sampled configuration that can't be trained (over the parameter budget, or
a stem that shrinks the image below a 3x3 conv) never becomes a KerasTuner
trial: the oracle records it with its reason and samples again. As a trial it
would count as failed (`max_consecutive_failed_trials` stops a search after 3
in a row) and would take a Hyperband slot, so a round could never fill and the
bracket would never reach its longer trainings.
"""

import json
import os
import time
from pathlib import Path

import keras_tuner as kt
import numpy as np

from keras_ultimus.datasets.cifar10 import load_cifar10, split_validation
from keras_ultimus.datasets.pipelines import eval_data
from keras_ultimus.errors import NO_SPACE, UserError
from keras_ultimus.runs.folder import (  # noqa: F401  the file names, importable from here as before
    BEST_NAME,
    LEADERBOARD_NAME,
    RESULT_NAME,
    SEARCH_NAME,
    SKIPPED,
    write_atomic,
)
from keras_ultimus.tuner.hypermodel import (
    budget_reason,
    declare_space,
)
from keras_ultimus.tuner.leaderboard import best_config, leaderboard
from keras_ultimus.tuner.options import MAX_PARAMS, SETTINGS

OBJECTIVE = "val_accuracy"
# The files of a search folder.
MAX_DRAWS = 1000  # rejected samples per request before the oracle gives up on the space
ATTEMPTS_NAME = "attempts.json"  # per trial: the processes that started it
MAX_ATTEMPTS = 2  # starts of one trial (a killed worker's trial runs once more) before it fails


class NoSpace(OSError, kt.errors.FatalError):
    """A trial's write failed for want of space: fatal to the search (KerasTuner would fail trial after trial)."""


class BudgetOracle:
    """Mixin for a KerasTuner oracle: draw random values again while they can't be trained.

    Rejected values are kept in `self.skipped` (saved in oracle.json) with
    their reason, so the leaderboard can show them.
    """

    def __init__(self, *args, max_params: int = MAX_PARAMS, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_params = max_params
        self.skipped = []

    def _reject(self, values: dict | None) -> bool:
        """Record `values` if they can't be trained, and say so."""
        if not values:
            return False
        reason = budget_reason(values, self.max_params)
        if reason is None:
            return False
        self.skipped.append({"values": values, "reason": reason})
        self._tried_so_far.add(self._compute_values_hash(values))
        return True

    def _random_values(self):
        for _ in range(MAX_DRAWS):
            values = super()._random_values()
            if not self._reject(values):
                return values
        return None

    def get_state(self):
        return {**super().get_state(), "skipped": self.skipped}

    def set_state(self, state):
        super().set_state(state)
        self.skipped = state.get("skipped", [])


class HyperbandOracle(BudgetOracle, kt.oracles.HyperbandOracle):
    """KerasTuner's Hyperband oracle within a parameter budget."""


class RandomSearchOracle(BudgetOracle, kt.oracles.RandomSearchOracle):
    """KerasTuner's random-search oracle within a parameter budget."""


class BayesianOptimizationOracle(BudgetOracle, kt.oracles.BayesianOptimizationOracle):
    """KerasTuner's Bayesian oracle within a parameter budget: a proposal over it is replaced by a random draw."""

    def populate_space(self, trial_id):
        result = super().populate_space(trial_id)
        if result.get("status") == "RUNNING" and self._reject(result["values"]):
            values = self._random_values()
            return {"status": "RUNNING", "values": values} if values else {"status": "STOPPED"}
        return result


def role() -> str:
    """'single', 'chief' or 'worker', from KerasTuner's distribution variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    missing = [v for v in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID") if v not in os.environ]
    if missing:
        raise UserError(f"KERASTUNER_ORACLE_IP is set but {missing[0]} is not")
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


class UltimusTuner(kt.Tuner):
    """A KerasTuner `Tuner` that trains every trial from scratch for the epochs it is given.

    Hyperband promotes a configuration to more epochs (`tuner/epochs`) and
    would continue the earlier trial's weights from `tuner/initial_epoch`
    with a fresh optimizer: its one-cycle schedule would restart from warm-up,
    or, counted from the old epoch, be cut short. Here a promoted trial trains
    `tuner/epochs` epochs from epoch 0, so its score is that of
    `train --epochs tuner/epochs` (Hyperband as in Li et al., 2018, which
    trains each rung from scratch).
    """

    def _populate_initial_space(self):
        """Declare every axis, conditional ones included, without building models of arbitrary values.

        KerasTuner's default builds the hypermodel with values it picks to reach
        each conditional branch, some of which can't be built (a 6-conv stem
        pooled after every conv). This is the override point it documents.
        """
        hp = self.oracle.get_space()
        declare_space(hp, getattr(self.hypermodel, "space", "reference"))
        self.oracle.update_space(hp)

    def run_trial(self, trial, *args, **kwargs):
        if (
            role() == "worker"
        ):  # a single search stopped by the user resumes its trial as often as asked
            record_attempt(Path(self.get_trial_dir(trial.trial_id)))
        if "tuner/epochs" in trial.hyperparameters.values:
            kwargs["epochs"] = trial.hyperparameters.values["tuner/epochs"]
        kwargs["trial_folder"] = self.get_trial_dir(
            trial.trial_id
        )  # public: run_trial's kwargs reach fit
        try:
            return super().run_trial(trial, *args, **kwargs)
        except OSError as e:
            if (
                e.errno in NO_SPACE
            ):  # the command ends in one line, exit 3 (errors.cli); a rerun resumes
                raise NoSpace(
                    e.errno, e.strerror, e.filename or self.get_trial_dir(trial.trial_id)
                ) from None
            raise

    def pre_create_trial(self):
        """Pause a worker: while a round finishes the oracle answers IDLE, and KerasTuner asks again at once."""
        if role() == "worker":
            time.sleep(1)


def record_attempt(folder: Path) -> None:
    """Note this process as starting the trial in `folder`; fail the trial once `MAX_ATTEMPTS` starts died in it.

    A trial is started again only when the process that ran it died (a worker restarted under its tuner id
    gets its unfinished trial back), so earlier entries are processes that never finished it.
    """
    path = folder / ATTEMPTS_NAME
    attempts = json.loads(path.read_text()) if path.exists() else []
    if len(attempts) >= MAX_ATTEMPTS:
        last = attempts[-1]
        raise kt.errors.FailedTrialError(
            f"{len(attempts)} processes died running this trial (last: "
            f"{last['tuner_id']}, pid {last['pid']}); not started again"
        )
    attempts.append(
        {"tuner_id": os.environ.get("KERASTUNER_TUNER_ID", "tuner0"), "pid": os.getpid()}
    )
    write_atomic(path, json.dumps(attempts))


def make_tuner(
    algorithm: str,
    out: Path,
    hypermodel: kt.HyperModel,
    epochs: int,
    max_trials: int | None = None,
    seed: int = 0,
    max_params: int = MAX_PARAMS,
    overwrite: bool = False,
    strategy=None,
) -> UltimusTuner:
    """The tuner for `algorithm`, keeping its state in `out`; `epochs` is Hyperband's most for one model."""
    common = dict(objective=OBJECTIVE, seed=seed, max_params=max_params)
    if algorithm == "hyperband":
        oracle = HyperbandOracle(max_epochs=epochs, **common)
        oracle.max_trials = max_trials  # an optional cap on Hyperband's own schedule
    elif algorithm == "random":
        oracle = RandomSearchOracle(max_trials=max_trials or 10, **common)
    else:
        max_trials = max_trials or 10
        # KerasTuner's default of 3 random points per hyperparameter would leave
        # nothing for the Gaussian process in a small budget.
        oracle = BayesianOptimizationOracle(
            max_trials=max_trials, num_initial_points=max(2, max_trials // 3), **common
        )
    return UltimusTuner(
        oracle=oracle,
        hypermodel=hypermodel,
        overwrite=overwrite,
        directory=str(out.parent),
        project_name=out.name,
        distribution_strategy=strategy,
    )


def finish(
    tuner: kt.Tuner, out: Path, settings: dict, test: tuple[np.ndarray, np.ndarray], pipeline: str
) -> dict:
    """Write leaderboard.csv, best.json and result.json (with the best model's test accuracy)."""
    tuner.save()  # a chief's oracle saves before it drops the last ended trial from its ongoing ones
    table = leaderboard(tuner)
    write_atomic(out / LEADERBOARD_NAME, table.to_csv(index=False))
    completed = table[table["status"] == "COMPLETED"]
    if completed.empty:
        raise UserError(f"no trial completed; see the trial folders in {out}")
    best = tuner.oracle.get_best_trials(1)[0]
    write_atomic(
        out / BEST_NAME,
        json.dumps(best_config(best.hyperparameters.values, tuner.hypermodel.settings), indent=2),
    )
    model = tuner.load_model(best)  # weights of its best epoch
    logits = model.predict(eval_data(*test, settings["batch_size"], kind=pipeline), verbose=0)
    result = {
        "best_trial": best.trial_id,
        "val_accuracy": best.score,
        "test_accuracy": float(np.mean(np.argmax(logits, axis=-1) == test[1])),
        "test_images": len(test[1]),
        "trials_completed": len(completed),
        "configurations_skipped": int((table["status"] == SKIPPED).sum()),
        "settings": settings,
    }
    write_atomic(out / RESULT_NAME, json.dumps(result, indent=2))
    return result


def check_settings(out: Path, settings: dict) -> None:
    """Refuse to resume a search folder with different search flags."""
    path = out / SEARCH_NAME
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable ({e}); start over with fresh=True") from None
    for k in SETTINGS:
        if k in old and old[k] != settings[k]:
            raise UserError(
                f"{out} was searched with {k}={old[k]!r}, not {settings[k]!r}: "
                "repeat its settings to resume, or start over with fresh=True"
            )


def search_data(
    data: str | None, limit_train: int | None, val_fraction: float, seed: int, batch_size: int
):
    """(fit, validation, test) arrays; validation is a seeded split of the training set only."""
    (x_train, y_train), test = load_cifar10(data)
    x_train, y_train = x_train[:limit_train], y_train[:limit_train]
    fit, val = split_validation(x_train, y_train, val_fraction, seed)
    if len(val[0]) < 1 or len(fit[0]) < 2 * batch_size:
        raise UserError(
            f"{len(fit[0])} training / {len(val[0])} validation images: need a validation image "
            "and at least 2 batches per epoch (lower --batch-size or --val-fraction, or raise "
            "--limit-train)"
        )
    return fit, val, test
