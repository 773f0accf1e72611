"""What a training run returns: its model and History, the last epoch's figures, its folder and its record."""

from dataclasses import dataclass
from pathlib import Path

import keras


@dataclass(frozen=True)
class FitResult:
    """A finished run: `keras_ultimus.fit` returns it, and it unpacks as `model, history = keras_ultimus.fit(...)`.

    Attributes:
        model: the trained `keras.Model`.
        history: its `keras.callbacks.History`; after a resume, of the resumed epochs only.
        final: the last epoch's figures (`epoch`, `loss`, `accuracy`, `val_loss`, `val_accuracy`,
            `learning_rate`, ...), `test_accuracy_flip_tta` with `tta="flip"` or `"multicrop"`, and
            `test_accuracy_multicrop_tta` with `tta="multicrop"`; with a run folder, as its log.csv's last row
            reads (every figure a float).
        folder: the run folder, or `None` when nothing was written.
        info: the run record: run.json's contents when there is a run folder.
    """

    model: keras.Model
    history: keras.callbacks.History
    final: dict
    folder: Path | None
    info: dict

    def __iter__(self):
        """The model, then its History: what `fit` returned before it returned more."""
        return iter((self.model, self.history))
