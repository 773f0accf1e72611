"""A saved model's predictions on the test split, and the figures a report draws from them."""

from dataclasses import dataclass

import numpy as np

from keras_ultimus.constants import CLASS_NAMES


@dataclass
class Evaluation:
    """A saved model's predictions on the test split."""

    images: np.ndarray  # uint8 NHWC
    labels: np.ndarray
    probs: np.ndarray
    attention: list[np.ndarray]  # mean (key_dim, key_dim) map per Ultimus block

    @property
    def predicted(self) -> np.ndarray:
        """The predicted class of each image."""
        return self.probs.argmax(axis=1)

    @property
    def accuracy(self) -> float:
        """The fraction of images predicted right."""
        return float(np.mean(self.predicted == self.labels))

    def confusion(self) -> np.ndarray:
        """Counts: row = true class, column = predicted class."""
        counts = np.zeros((len(CLASS_NAMES),) * 2, int)
        np.add.at(counts, (self.labels, self.predicted), 1)
        return counts

    def class_accuracy(self) -> np.ndarray:
        """Test accuracy of each class (NaN for a class with no test images)."""
        counts = self.confusion()
        with np.errstate(invalid="ignore"):
            return np.diag(counts) / counts.sum(axis=1)
