"""Checkpoints that load anywhere: synchronized BatchNorm saved as plain, the best model, and the EMA weights."""

import contextlib
from collections.abc import Iterator
from pathlib import Path

import keras


@contextlib.contextmanager
def portable_batchnorm(model: keras.Model) -> Iterator[None]:
    """Save BatchNormalization(synchronized=True) layers as plain ones, so the file loads on every backend.

    `synchronized` only changes how TF computes batch statistics while training; the weights are
    the same, but JAX and torch refuse to build a layer whose config says True.
    """
    layers = [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization) and layer.synchronized
    ]
    for layer in layers:
        layer.synchronized = False
    try:
        yield
    finally:
        for layer in layers:
            layer.synchronized = True


class PortableCheckpoint(keras.callbacks.ModelCheckpoint):
    """ModelCheckpoint whose files load on every backend, also for a --sync-bn model, and are whole or absent.

    Each save goes to a partial file beside the checkpoint, which replaces it only once written: a kill or a full
    disk in the middle of a save leaves the previous checkpoint as it was.
    """

    def _save_model(self, epoch, batch, logs):
        final = Path(self.filepath)
        partial = final.with_name(f".{final.stem}.partial{final.suffix}")
        partial.unlink(
            missing_ok=True
        )  # a leftover of a killed save must never replace the checkpoint
        self.filepath = str(partial)
        try:
            with portable_batchnorm(self.model), ema_weights(self.model):
                super()._save_model(epoch, batch, logs)
        except BaseException as e:
            partial.unlink(missing_ok=True)
            if isinstance(e, OSError):
                raise OSError(e.errno, e.strerror, str(final)) from e
            raise
        finally:
            self.filepath = str(final)
        if partial.exists():  # save_best_only skips epochs that are no better
            partial.replace(final)


@contextlib.contextmanager
def ema_weights(model: keras.Model) -> Iterator[None]:
    """Put the optimizer's EMA weights in the model for a save, as validation saw them (`--ema`), then restore."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not getattr(optimizer, "use_ema", False) or not optimizer.built:
        yield
        return
    raw = [keras.ops.copy(v.value) for v in model.trainable_variables]
    optimizer.finalize_variable_values(model.trainable_variables)
    try:
        yield
    finally:
        for variable, value in zip(model.trainable_variables, raw):
            variable.assign(value)
