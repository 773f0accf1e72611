"""Test accuracy of a model, plain and with flip test-time augmentation, each reported under its own name."""

import keras
import numpy as np


def logits(
    model: keras.Model, images: np.ndarray, batch_size: int, mirrored: bool = False
) -> np.ndarray:
    """The model's float64 logits for uint8 NHWC images, or for their left-right mirror images."""
    images = images[:, :, ::-1] if mirrored else images
    return np.asarray(
        model.predict(images.astype("float32"), batch_size=batch_size, verbose=0), np.float64
    )


def accuracies(
    model: keras.Model, images: np.ndarray, labels: np.ndarray, batch_size: int
) -> dict[str, float]:
    """Plain test accuracy, and with flip TTA (the mean of the logits of each image and its mirror image)."""
    plain = logits(model, images, batch_size)
    tta = (plain + logits(model, images, batch_size, mirrored=True)) / 2
    labels = np.asarray(labels).reshape(-1)
    return {
        "test_accuracy": float(np.mean(plain.argmax(-1) == labels)),
        "test_accuracy_flip_tta": float(np.mean(tta.argmax(-1) == labels)),
    }
