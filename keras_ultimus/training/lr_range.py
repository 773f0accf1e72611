"""The LR range test: sweep the learning rate exponentially and pick the steepest descent of the loss.

`LRSweep` is a Keras callback that sets a float learning rate before each batch
and records that batch's own loss. `sweep` runs it on any compiled model,
`smooth` and `suggest_lr` turn the record into one suggested peak LR, and
`find_lr` does all of it for a run config through the training recipe, writing
`sweep.csv`, `lr_find.png` and `lr_find.json`.

References: Smith, "Cyclical Learning Rates for Training Neural Networks" (2017).
"""

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # not pyplot: no GUI backend, PNGs render with Agg

from keras_ultimus.datasets.batching import batches_per_epoch
from keras_ultimus.datasets.pipelines import resolve
from keras_ultimus.errors import UserError
from keras_ultimus.plotting import save_png

SWEEP_CSV, CHART, SUMMARY = "sweep.csv", "lr_find.png", "lr_find.json"


class LRSweep(keras.callbacks.Callback):
    """Set the LR to `min_lr * ratio**step` before each batch and record that batch's loss.

    Keras logs the epoch's running mean of the loss, weighted by batch size, so a
    batch's own loss is `(mean_n * seen_n - mean_{n-1} * seen_{n-1}) / size_n`.
    `batch_sizes` are the sizes of one epoch's batches (default: all equal).
    Training stops once the smoothed loss exceeds `diverge` times its best, or a
    loss is not finite. Nothing is restored afterwards: the sweep is a probe.
    `print_every` > 0 prints a progress line every that many steps.
    """

    def __init__(
        self,
        min_lr: float,
        max_lr: float,
        steps: int,
        batch_sizes: Sequence[int] | None = None,
        beta: float = 0.9,
        diverge: float = 4.0,
        print_every: int = 0,
    ):
        super().__init__()
        self.print_every = print_every
        self.lrs = np.geomspace(min_lr, max_lr, steps)
        self.batch_sizes, self.beta, self.diverge = batch_sizes, beta, diverge
        self.history: dict[str, list[float]] = {"lr": [], "loss": []}
        self.stopped: str | None = None
        self._avg, self._best = 0.0, math.inf

    def on_epoch_begin(self, epoch, logs=None):
        self._batch, self._seen, self._total = 0, 0.0, 0.0

    def on_train_batch_begin(self, batch, logs=None):
        # On JAX, reading `self.model` syncs the training state, so the new LR is seen by this step.
        self.model.optimizer.learning_rate = float(self.lrs[len(self.history["lr"])])

    def on_train_batch_end(self, batch, logs=None):
        size = self.batch_sizes[self._batch] if self.batch_sizes else 1
        seen = self._seen + size
        total = float(keras.ops.convert_to_numpy(logs["loss"])) * seen
        loss = (total - self._total) / size
        self._batch, self._seen, self._total = self._batch + 1, seen, total
        self.history["lr"].append(float(self.lrs[len(self.history["lr"])]))
        self.history["loss"].append(loss)
        step = len(self.history["loss"])
        self._avg = self.beta * self._avg + (1 - self.beta) * loss
        smoothed = self._avg / (1 - self.beta**step)  # the same value as smooth(history)[-1]
        self._best = min(self._best, smoothed)
        if not math.isfinite(loss):
            self.stopped = f"loss {loss} at step {step - 1}"
        elif smoothed > self.diverge * self._best:
            self.stopped = f"smoothed loss above {self.diverge:g}x its best at step {step - 1}"
        if self.print_every and (step % self.print_every == 0 or self.stopped):
            lr = self.history["lr"][-1]
            print(
                f"step {step}/{len(self.lrs)}  lr {lr:.3g}  loss {loss:.4f}  smoothed {smoothed:.4f}"
            )
        if self.stopped or len(self.history["lr"]) == len(self.lrs):
            self.model.stop_training = True


def smooth(values: Sequence[float], beta: float = 0.9) -> np.ndarray:
    """Exponential moving average with bias correction: `avg_i / (1 - beta**(i+1))`."""
    out, avg = np.empty(len(values)), 0.0
    for i, value in enumerate(values):
        avg = beta * avg + (1 - beta) * value
        out[i] = avg / (1 - beta ** (i + 1))
    return out


def suggest_lr(lrs: Sequence[float], smoothed: Sequence[float], skip_start: int = 0) -> float:
    """The LR where the smoothed loss falls fastest per unit of log LR, searched before its minimum.

    The minimum itself is too late: the loss is already about to blow up there.
    Raises UserError when the loss never falls after `skip_start` points.
    """
    lrs, smoothed = np.asarray(lrs, float), np.asarray(smoothed, float)
    finite = np.isfinite(smoothed)
    stop = int(np.argmin(np.where(finite, smoothed, np.inf))) + 1
    if stop - skip_start < 2:
        raise UserError(
            f"the loss never fell over the sweep ({lrs[0]:.2g} to {lrs[-1]:.2g}); try a lower --min-lr or more --steps"
        )
    slope = np.gradient(smoothed[skip_start:stop], np.log(lrs[skip_start:stop]))
    return float(lrs[skip_start + int(np.argmin(slope))])


def sweep(
    fit: Callable[[int, list[keras.callbacks.Callback]], object],
    min_lr: float,
    max_lr: float,
    steps: int,
    batches_per_epoch: int,
    batch_sizes: Sequence[int] | None = None,
    beta: float = 0.9,
    diverge: float = 4.0,
    print_every: int = 0,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> tuple[pd.DataFrame, str | None]:
    """Sweep a compiled model (float LR) through `fit`; return (step, lr, loss, smoothed) and why it stopped early.

    `fit(epochs, callbacks)` fits the model for that many epochs of `batches_per_epoch` batches with those callbacks;
    the sweep runs over as many epochs as `steps` needs. `callbacks` go to `fit` too.
    """
    if not 0 < min_lr < max_lr:
        raise UserError(f"the LR range must satisfy 0 < min < max, got {min_lr:g} to {max_lr:g}")
    if steps < 2:
        raise UserError(f"an LR sweep needs at least 2 steps, got {steps}")
    recorder = LRSweep(min_lr, max_lr, steps, batch_sizes, beta, diverge, print_every)
    epochs = -(-steps // batches_per_epoch)
    fit(epochs, [*callbacks, recorder])
    table = pd.DataFrame(recorder.history)
    table.insert(0, "step", range(len(table)))
    table["smoothed"] = smooth(table["loss"], beta)
    return table, recorder.stopped


def with_float_lr(model: keras.Model, learning_rate: float) -> None:
    """Recompile `model` exactly as compiled (optimizer, loss, metrics) but with a float LR a callback can set."""
    config = model.get_compile_config()
    optimizer = config["optimizer"]["config"]
    while "inner_optimizer" in optimizer:  # LossScaleOptimizer under mixed_float16
        optimizer = optimizer["inner_optimizer"]["config"]
    optimizer["learning_rate"] = float(learning_rate)
    model.compile_from_config(config)


def plot(table: pd.DataFrame, suggested: float | None, title: str = "LR range test") -> Figure:
    """Loss against LR on a log axis: each batch's loss, the smoothed loss, and the suggestion marked."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(table["lr"], table["loss"], color="0.75", lw=0.8, label="batch loss")
    ax.plot(table["lr"], table["smoothed"], color="C0", lw=2, label="smoothed loss")
    if suggested is not None:
        at = np.interp(np.log(suggested), np.log(table["lr"]), table["smoothed"])
        ax.axvline(suggested, color="C3", ls="--", lw=1)
        ax.plot([suggested], [at], "o", color="C3", label=f"steepest descent: {suggested:.3g}")
    ax.set_xscale("log")
    # From the lowest batch loss to a little above the start: the divergence at the end would flatten the rest.
    low, start = (
        np.nanmin(table["loss"].where(np.isfinite(table["loss"]))),
        table["smoothed"].iloc[0],
    )
    span = max(start - low, 1e-3 * abs(start), 1e-12)
    ax.set_ylim(low - 0.1 * span, start + 0.5 * span)
    ax.set(xlabel="learning rate", ylabel="training loss", title=title)
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    return fig


def find_lr(
    config: dict,
    data: tuple,
    out: Path,
    min_lr: float = 1e-5,
    max_lr: float = 1.0,
    steps: int | None = None,
    beta: float = 0.9,
    command: str = "",
) -> dict:
    """Run the LR range test for the model and data of a run `config` into folder `out`; return lr_find.json.

    The model is built and compiled as `recipe.train` does it (`recipe.build` under
    config["precision"], `compiling.compile_model` with config["jit"]), then given a
    float LR; the data are the training split of `data` (as `train()` takes it)
    through the same pipeline (config["pipeline"]), seeded by config["seed"].
    `steps` defaults to one epoch. The suggested peak LR is `result["suggested"]`.
    Raises UserError, after writing the sweep, when the loss never fell.
    """
    # Imported here, so that recipe.py may import this module for `train --max-lr auto`.
    from keras_ultimus.config import RecipeOptions
    from keras_ultimus.models.whitening import set_whitening
    from keras_ultimus.runs.folder import write_atomic
    from keras_ultimus.training.compiling import compile_model
    from keras_ultimus.training.fitting import fit_arrays
    from keras_ultimus.training.recipe import build, environment, seed_everything

    env = (
        environment()
    )  # before the sweep: the git commit of the code that runs, not of a later checkout
    seed_everything(config["seed"], config.get("deterministic", False))
    (x_train, y_train), _ = data
    x_train, y_train = x_train[: config.get("limit_train")], y_train[: config.get("limit_train")]
    batch_size = config["batch_size"]
    pipeline = resolve(config.get("pipeline", "auto"))
    augment = config.get("augment", True)
    per_epoch = batches_per_epoch(len(x_train), batch_size)
    sizes = [min(batch_size, len(x_train) - i * batch_size) for i in range(per_epoch)]
    steps = steps or per_epoch

    model = build(config, config.get("precision", "float32"))
    set_whitening(model, x_train)
    compile_model(
        model,
        min_lr,
        steps,
        jit=config.get("jit", "auto"),
        options=RecipeOptions.from_config(config),
    )
    with_float_lr(model, min_lr)

    def fit(epochs: int, callbacks: list[keras.callbacks.Callback]) -> None:
        fit_arrays(
            model,
            x_train,
            y_train,
            batch_size=batch_size,
            seed=config["seed"],
            augment=augment,
            pipeline=pipeline,
            epochs=epochs,
            callbacks=callbacks,
        )

    table, stopped = sweep(fit, min_lr, max_lr, steps, per_epoch, sizes, beta, print_every=10)
    skip = min(
        round(1 / (1 - beta)), len(table) // 4
    )  # the first EMA values average only a few batches
    try:
        suggested, failed = suggest_lr(table["lr"], table["smoothed"], skip), None
    except UserError as e:  # still write the sweep, so the user can see why
        suggested, failed = None, str(e)

    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / SWEEP_CSV, index=False)
    save_png(
        plot(table, suggested, f"LR range test: {len(table)} steps, batch {batch_size}"),
        out / CHART,
        dpi=120,
    )
    best = int(table["smoothed"].idxmin())
    result = {
        "suggested": suggested,
        "min_lr": min_lr,
        "max_lr": max_lr,
        "steps": steps,
        "steps_run": len(table),
        "stopped_early": stopped,
        "beta": beta,
        "lowest_smoothed_loss": {
            "lr": float(table["lr"][best]),
            "loss": float(table["smoothed"][best]),
        },
        "sweep_csv": str(out / SWEEP_CSV),
        "chart": str(out / CHART),
        "pipeline": pipeline,
        "config": config,
        "command": command,
        **env,
    }
    write_atomic(out / SUMMARY, json.dumps(result, indent=2))
    if failed:
        raise UserError(f"{failed} (the sweep is in {out})")
    return result
