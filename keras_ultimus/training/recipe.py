"""A training run: build and compile the model of a run config, fit it, and keep its run folder if it has one."""

import hashlib
import os
import platform
import sys
from datetime import datetime
from pathlib import Path

import keras
import numpy as np

import keras_ultimus
from keras_ultimus.config import RecipeOptions, model_kwargs
from keras_ultimus.datasets.batching import batches_per_epoch
from keras_ultimus.datasets.cifar10 import split_validation
from keras_ultimus.datasets.pipelines import eval_data, resolve
from keras_ultimus.errors import UserError
from keras_ultimus.models.ultimus import build_model
from keras_ultimus.models.whitening import set_whitening
from keras_ultimus.provenance import git_state
from keras_ultimus.training import distribute
from keras_ultimus.training.callbacks import HeldOutScore
from keras_ultimus.training.compiling import compile_model
from keras_ultimus.training.evaluation import accuracies, tta_words
from keras_ultimus.training.fitting import fit_arrays
from keras_ultimus.training.result import FitResult
from keras_ultimus.training.run_folder import RunFolder


def check_model(config: dict) -> dict:
    """`config` with --conv-widths/--downsample text parsed, its model settings checked by `build_model`'s checks.

    Bad values raise a one-line UserError.
    """
    from keras_ultimus.models.ultimus import check_model_args, parse_conv_widths, parse_downsample

    config = dict(config)
    try:
        if isinstance(config.get("conv_widths"), str):
            config["conv_widths"] = parse_conv_widths(config["conv_widths"])
        if isinstance(config.get("downsample"), str):
            config["downsample"] = parse_downsample(config["downsample"])
        check_model_args(**model_kwargs(config))
    except (ValueError, TypeError) as e:
        raise UserError(f"model settings: {e}") from None
    return config


def build(config: dict, precision: str = "float32") -> keras.Model:
    """Build the model of `config` under the `precision` dtype policy; bad arguments raise UserError."""
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        return build_model(**model_kwargs(config))
    except ValueError as e:
        raise UserError(f"bad model settings: {e}") from None
    finally:
        keras.config.set_dtype_policy(before)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and the backend; with `deterministic`, also ask the backend for deterministic ops."""
    keras.utils.set_random_seed(seed)
    if not deterministic:
        return
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif backend == "torch":
        import torch

        os.environ.setdefault(
            "CUBLAS_WORKSPACE_CONFIG", ":4096:8"
        )  # cuBLAS' deterministic mode needs it
        torch.use_deterministic_algorithms(True)


def environment() -> dict:
    """Package version and git commit, backend, library versions and machine, for run.json."""
    versions = {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "numpy": np.__version__,
    }
    for name in ("tensorflow", "torch", "jax"):
        if name in sys.modules and hasattr(sys.modules[name], "__version__"):
            versions[name] = sys.modules[name].__version__
    return {
        "keras_ultimus": {"version": keras_ultimus.__version__, **git_state()},
        "backend": keras.backend.backend(),
        "versions": versions,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
        },
    }


def fingerprint(data: tuple) -> str:
    """A hash of the CIFAR-10 arrays, so a resumed run can check that moved data is the same data."""
    h = hashlib.blake2b(digest_size=16)
    for images, labels in data:
        for array in (images, labels):
            h.update(np.ascontiguousarray(array).data)
    return h.hexdigest()


def train(
    config: dict,
    out: Path,
    data: tuple,
    resume: bool = False,
    command: str = "",
    plan: "distribute.Plan | None" = None,
    extra: dict | None = None,
) -> dict:
    """Fit the model described by `config` on `data` into run folder `out`; return run.json."""
    return fit_run(config, data, out, resume, command, plan, extra).info


def fit_run(
    config: dict,
    data: tuple,
    out: Path | None = None,
    resume: bool = False,
    command: str = "",
    plan: "distribute.Plan | None" = None,
    extra: dict | None = None,
    verbose: str | int = "auto",
) -> FitResult:
    """Fit the model described by `config` on `data`; return the model, its History, final figures and record.

    With a run folder `out` (a `RunFolder`), the run is resumable and leaves its files there
    (log.csv, run.json, checkpoints, model.keras); everything that can fail on bad input (data,
    model settings, the folder) is checked before the first file is written. Under a multi-process
    `plan` only the chief writes `out`; `extra` goes into a new run's run.json. Without `out`,
    nothing is written.
    """
    plan = plan or distribute.Plan()
    # Non-chief processes write a scratch copy: they save what the chief saves.
    folder = RunFolder(plan.output_dir(out), resume) if out is not None else None
    run_info = folder.info if folder is not None else {}
    digest = fingerprint(data)
    if resume and run_info.get("data_fingerprint", digest) != digest:
        raise UserError(f"data={config['data']}: not the data run {folder.path} trained on")
    precision, jit = config.get("precision", "float32"), config.get("jit", "auto")
    try:
        options = RecipeOptions.from_config(config)
    except (TypeError, ValueError) as e:
        raise UserError(f"bad recipe settings: {e}") from None
    pipeline = run_info.get("pipeline") or resolve(config.get("pipeline", "auto"))
    seed_everything(config["seed"], config.get("deterministic", False))

    (x_train, y_train), (x_test, y_test) = data
    x_train, y_train = x_train[: config["limit_train"]], y_train[: config["limit_train"]]
    heldout = None
    if config.get(
        "val_split"
    ):  # chosen on, never trained on; the test split stays the per-epoch val_*
        (x_train, y_train), heldout = split_validation(
            x_train, y_train, config["val_split"], config["seed"]
        )
    whiten_from = x_train  # every process whitens with the same, unsharded images
    x_train, y_train = plan.shard(x_train, y_train)
    x_test, y_test = x_test[: config["limit_test"]], y_test[: config["limit_test"]]
    test_images = len(x_test)
    x_test, y_test = plan.shard(x_test, y_test)
    batch = plan.local_batch_size(config["batch_size"])  # the global batch stays --batch-size
    steps = (
        batches_per_epoch(len(x_train), batch) * config["epochs"]
    )  # global steps: one per global batch
    with plan.scope():
        model = build(config, precision)
        set_whitening(model, whiten_from)
        compile_model(model, config["max_lr"], steps, config["pct_start"], jit, options)
    if not resume:
        run_info = {
            "config": config,
            "command": command,
            **environment(),
            "precision": precision,
            "jit_compile": bool(model.jit_compile),
            "pipeline": pipeline,
            "distribute": plan.record(),
            "data_fingerprint": digest,
            "test_images": test_images,
            "started": datetime.now().isoformat(timespec="seconds"),
            **(extra or {}),
        }
    else:
        run_info["config"] = config  # --data may point to a moved copy
        run_info.setdefault("resumed", []).append(
            {
                "command": command,
                "at": datetime.now().isoformat(timespec="seconds"),
                **environment(),
            }
        )
    scoring = (
        [HeldOutScore(eval_data(*plan.shard(*heldout), batch, kind=pipeline), bool(options.ema))]
        if heldout is not None
        else []
    )
    if folder is not None:
        folder.open(run_info, model)
    with plan.scope():
        history = fit_arrays(
            model,
            x_train,
            y_train,
            batch_size=batch,
            seed=config["seed"],
            augment=config["augment"],
            pipeline=pipeline,
            epochs=config["epochs"],
            options=options,
            validation=(x_test, y_test),
            callbacks=[*scoring, *(folder.callbacks(bool(scoring)) if folder is not None else [])],
            verbose=verbose,
        )
        if folder is not None:
            folder.save_model(model)
    finished = datetime.now().isoformat(timespec="seconds")
    final = (
        folder.final()
        if folder is not None
        else {"epoch": history.epoch[-1], **{k: v[-1] for k, v in history.history.items()}}
    )
    if options.tta != "none":  # val_accuracy stays the plain figure; each TTA one has its own key
        figures = accuracies(model, x_test, y_test, batch, options.tta)
        del figures["test_accuracy"]
        final.update(figures)
        print(f"Test accuracy: {final['val_accuracy']:.2%} plain, {tta_words(final)}")
    if folder is not None:
        folder.finish(finished, final)  # run.json: the final figures and the wall time
    else:
        run_info.update(finished=finished, final=final)
    return FitResult(model, history, final, folder.path if folder is not None else None, run_info)
