"""Contracts with the private Keras and KerasTuner members keras_ultimus overrides or reads.

Each test pins what our code relies on at the versions in requirements.txt; when
an upgrade changes it, the test fails naming the member and the code that uses it.
`tests/test_layout.py` fails when code starts using a private member not listed here.
"""

import inspect

import keras
import keras_tuner as kt
import numpy as np

# Every private member of Keras or KerasTuner the package overrides, calls or sets, and who does.
PRIVATE_MEMBERS = {
    "_load_model": "training/callbacks.py WholeBackup (overrides BackupAndRestore)",
    "_save_model": "training/callbacks.py WholeBackup (overrides BackupAndRestore)",
    "_weights_path": "training/callbacks.py WholeBackup (sets BackupAndRestore's)",
    "_training_metadata_path": "training/callbacks.py WholeBackup (sets BackupAndRestore's)",
    "_current_epoch": "training/callbacks.py WholeBackup (reads BackupAndRestore's)",
    "_stateful_handle_non_finite_grads": "training/compiling.py LossScaleOptimizer (overrides Keras')",
    "_stateless_handle_non_finite_grads": "training/compiling.py LossScaleOptimizer (overrides Keras')",
    "_flatten_layers": "training/checkpoints.py portable_batchnorm (calls Model._flatten_layers)",
    "_random_values": "tuner/search.py BudgetOracle (overrides Oracle)",
    "_tried_so_far": "tuner/search.py BudgetOracle (adds to Oracle's)",
    "_compute_values_hash": "tuner/search.py BudgetOracle (calls Oracle's)",
    "_populate_initial_space": "tuner/search.py UltimusTuner (overrides BaseTuner's)",
}

# Public-looking but undocumented attributes whose behaviour the package relies on (not `_`-named, so
# tests/test_layout.py can't find them): each has a test here too.
INTERNAL_ATTRIBUTES = {
    "CSVLogger.keys": "training/callbacks.py OrderedCSVLogger (sets the column order before Keras sorts it)",
    "per-thread global state": "models/ultimus.py count_trainable (builds a model with uninitialized weights "
    "in a thread of its own, so Keras' list of them goes with the thread)",
}


def broken(member: str, what: str) -> str:
    return (
        f"{member}: {what} in keras {keras.__version__} / keras-tuner {kt.__version__}; "
        f"{PRIVATE_MEMBERS[member]} relies on it: update it before moving the pin"
    )


def params(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_backup_and_restore_loads_and_saves_through_the_methods_and_paths_whole_backup_overrides(
    tmp_path,
):
    cls = keras.callbacks.BackupAndRestore
    for member in ("_load_model", "_save_model"):
        assert params(getattr(cls, member, lambda: None)) == ["self"], broken(
            member, "not a method of self alone"
        )
    source = inspect.getsource(cls)
    assert "self._load_model()" in inspect.getsource(cls.on_train_begin), broken(
        "_load_model", "not called"
    )
    assert "self._save_model()" in source, broken("_save_model", "not called")
    callback = cls(str(tmp_path))
    for member in ("_weights_path", "_training_metadata_path", "_current_epoch"):
        assert hasattr(callback, member), broken(member, "no such attribute")
        assert (
            f"self.{member}"
            in inspect.getsource(cls._save_model) + inspect.getsource(cls._load_model)
            or member == "_current_epoch"
        ), broken(member, "not what _save_model/_load_model read")
    assert "self._current_epoch" in source, broken("_current_epoch", "not kept")


def test_loss_scale_optimizer_handles_non_finite_grads_through_the_overridden_methods():
    cls = keras.optimizers.LossScaleOptimizer
    expected = {
        "_stateful_handle_non_finite_grads": ["self"],
        "_stateless_handle_non_finite_grads": [
            "self",
            "optimizer_variables",
            "trainable_variables",
        ],
    }
    source = inspect.getsource(cls)
    for member, names in expected.items():
        assert params(getattr(cls, member, lambda: None)) == names, broken(
            member, "another signature"
        )
        assert f"self.{member}" in source, broken(member, "no longer called")


def test_flatten_layers_reaches_batchnorm_inside_nested_layers():
    inner = keras.Sequential([keras.layers.BatchNormalization(name="inner_bn")], name="inner")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, inner(keras.layers.Dense(4)(inputs)))
    names = [layer.name for layer in model._flatten_layers()]
    assert "inner_bn" in names, broken("_flatten_layers", "does not reach nested layers")


def test_oracle_keeps_tried_values_as_a_set_of_hashes_and_draws_through_random_values():
    oracle = kt.oracles.RandomSearchOracle(objective="val_accuracy", max_trials=1, seed=0)
    assert isinstance(oracle._tried_so_far, set), broken("_tried_so_far", "not a set")
    assert params(oracle._compute_values_hash) == ["values"], broken(
        "_compute_values_hash", "another signature"
    )
    assert params(type(oracle)._random_values) == ["self"], broken(
        "_random_values", "another signature"
    )
    assert "self._random_values()" in inspect.getsource(
        kt.oracles.RandomSearchOracle.populate_space
    ), broken("_random_values", "no longer what populate_space draws with")
    assert "self._duplicate(" in inspect.getsource(kt.Oracle._random_values), broken(
        "_tried_so_far", "no longer what _random_values skips (through _duplicate)"
    )
    assert "in self._tried_so_far" in inspect.getsource(kt.Oracle._duplicate), broken(
        "_tried_so_far", "no longer what _duplicate reads"
    )


def test_tuner_declares_its_initial_space_through_populate_initial_space():
    from keras_tuner.src.engine import base_tuner

    assert params(kt.Tuner._populate_initial_space) == ["self"], broken(
        "_populate_initial_space", "signature"
    )
    assert "self._populate_initial_space()" in inspect.getsource(base_tuner.BaseTuner.__init__), (
        broken("_populate_initial_space", "no longer called on construction")
    )


def test_run_trial_keywords_reach_the_hypermodels_fit():
    """The trial folder reaches UltimusHyperModel.fit as a run_trial keyword: KerasTuner's public hook."""
    source = inspect.getsource(kt.Tuner._build_and_fit_model)
    assert "fit(hp, model, *args, **kwargs)" in source.replace("\n", " ").replace("  ", ""), (
        "keras_tuner.Tuner no longer passes run_trial's keywords to HyperModel.fit; tuner/search.py's "
        "run_trial(trial_folder=...) relies on it"
    )


def test_csv_logger_writes_the_keys_it_is_given_and_sorts_them_only_while_unset():
    source = inspect.getsource(keras.callbacks.CSVLogger.on_epoch_end)
    assert "self.keys is None" in source, (
        f"CSVLogger.keys: no longer sorted only while None in keras {keras.__version__}; "
        f"{INTERNAL_ATTRIBUTES['CSVLogger.keys']} relies on it: update it before moving the pin"
    )
    assert "in self.keys" in source.split("self.writer", 1)[1], (
        "CSVLogger.keys: no longer what rows are written from"
    )


def test_uninitialized_weights_are_listed_per_thread_and_keep_their_shapes():
    import threading

    from keras.src.backend.common import global_state

    built = {}

    def build():
        with keras.StatelessScope(initialize_variables=False):
            built["layer"] = keras.layers.Dense(3)
            built["layer"].build((None, 4))
        built["listed"] = len(global_state.get_global_attribute("uninitialized_variables", []))

    before = global_state.get_global_attribute("uninitialized_variables")
    thread = threading.Thread(target=build)
    thread.start()
    thread.join()
    what = f"{INTERNAL_ATTRIBUTES['per-thread global state']} relies on it: update it before moving the pin"
    assert built["listed"] == 2, (
        f"uninitialized weights no longer listed in keras {keras.__version__}; {what}"
    )
    assert global_state.get_global_attribute("uninitialized_variables") == before, (
        f"Keras' global state is no longer per thread in keras {keras.__version__}; {what}"
    )
    assert [tuple(w.shape) for w in built["layer"].trainable_weights] == [(4, 3), (3,)]


def test_every_listed_member_is_checked_here():
    source = inspect.getsource(inspect.getmodule(test_every_listed_member_is_checked_here))
    body = source[source.index("def broken") :]
    assert all(f'"{member}"' in body or f"{member}" in body for member in PRIVATE_MEMBERS)
    assert np.all(np.array(sorted(PRIVATE_MEMBERS)) == np.array(sorted(set(PRIVATE_MEMBERS))))
