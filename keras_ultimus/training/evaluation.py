"""Test accuracy of a model, plain and with test-time augmentation (flip, multi-crop), each under its own name."""

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


def flip_logits(model: keras.Model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Flip TTA: the mean of the logits of each image and of its mirror image."""
    return (logits(model, images, batch_size) + logits(model, images, batch_size, True)) / 2


def shifted(images: np.ndarray, offset: int) -> np.ndarray:
    """NHWC images moved by one pixel: -1 shows one more row and column at the top left, +1 at the bottom right.

    The edge that comes in is the image's own, reflected (as a 1-pixel reflect padding).
    """
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    size = images.shape[1]
    return padded[:, 1 + offset : 1 + offset + size, 1 + offset : 1 + offset + size]


def multicrop_logits(
    model: keras.Model, images: np.ndarray, batch_size: int, flipped: np.ndarray | None = None
) -> np.ndarray:
    """Multi-crop TTA (airbench's second level): half the flip TTA logits, half the mean of the flip TTA logits
    of the images moved one pixel up-left and one pixel down-right; 6 views. `flipped`: the first half, if known."""
    if flipped is None:
        flipped = flip_logits(model, images, batch_size)
    moved = [flip_logits(model, shifted(images, offset), batch_size) for offset in (-1, 1)]
    return flipped / 2 + (moved[0] + moved[1]) / 4


def tta_logits(
    model: keras.Model, images: np.ndarray, batch_size: int, tta: str = "flip"
) -> dict[str, np.ndarray]:
    """The logits by their record key: plain, with flip TTA, and with `tta="multicrop"` with multi-crop TTA too."""
    plain = logits(model, images, batch_size)
    flipped = (plain + logits(model, images, batch_size, mirrored=True)) / 2
    figures = {"test_accuracy": plain, "test_accuracy_flip_tta": flipped}
    if tta == "multicrop":
        figures["test_accuracy_multicrop_tta"] = multicrop_logits(
            model, images, batch_size, flipped
        )
    return figures


def accuracies(
    model: keras.Model, images: np.ndarray, labels: np.ndarray, batch_size: int, tta: str = "flip"
) -> dict[str, float]:
    """Plain test accuracy and with flip TTA; with `tta="multicrop"`, also with multi-crop TTA."""
    labels = np.asarray(labels).reshape(-1)
    return {
        name: float(np.mean(x.argmax(-1) == labels))
        for name, x in tta_logits(model, images, batch_size, tta).items()
    }


TTA_NAMES = {"test_accuracy_flip_tta": "flip TTA", "test_accuracy_multicrop_tta": "multi-crop TTA"}


def tta_words(final: dict) -> str:
    """The TTA figures a run's final record holds, in words ("90.50% with flip TTA, ..."); "" if none."""
    return ", ".join(
        f"{final[key]:.2%} with {name}" for key, name in TTA_NAMES.items() if key in final
    )
