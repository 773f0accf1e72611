"""One backend's side of tests/test_backends.py.

From the repo root: `KERAS_BACKEND=jax python -m tests.backend_probe DIR OUT.npz`.

The first run of a backend builds each model with the same NumPy-made weights,
saves them as `DIR/<backend>-<model>.weights.h5` and `.keras`, and records the
inference logits and one training step (loss, gradients, BatchNorm moving
statistics) taken with the backend's own autodiff. Every run also loads the
files the other backends left in DIR and records what they predict. All
results go into OUT.npz, keyed like `grad|default|conv1/kernel`.
"""

import sys
from pathlib import Path

import keras
import numpy as np

from keras_ultimus.models.ultimus import build_model

BACKENDS = ("tensorflow", "torch", "jax")
MODELS = {
    "default": {},
    # Same shapes as the default, so jax reuses its compiled ops; logits vary more per image.
    "residual": {"residual": True, "scale": "post"},
}
BATCH_SIZE = 8


def fixed_batch() -> tuple[np.ndarray, np.ndarray]:
    """Eight blocky uint8 images as raw 0-255 float32 pixels, and their labels."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, size=(BATCH_SIZE, 8, 8, 3), dtype=np.uint8)
    images = coarse.repeat(4, axis=1).repeat(4, axis=2)  # 4x4 blocks: features differ per image
    return images.astype("float32"), (np.arange(BATCH_SIZE) % 10).astype("int32")


def set_numpy_weights(model: keras.Model, seed: int = 1) -> None:
    """Give every variable a seeded NumPy value, identical on every backend."""
    rng = np.random.default_rng(seed)
    values = []
    for variable in model.weights:
        shape, kind = tuple(variable.shape), variable.path.rsplit("/", 1)[-1]
        if kind == "kernel":
            value = rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape[:-1])), shape)
        elif kind in ("gamma", "moving_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        else:  # bias, beta, moving_mean
            value = rng.normal(0.0, 0.1, shape)
        values.append(value.astype("float32"))
    model.set_weights(values)


def training_step(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> tuple:
    """Loss, training-mode logits and gradients of one step, by the backend's own autodiff."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = loss_fn(labels, logits)
        grads = tape.gradient(loss, model.trainable_variables)
    elif backend == "torch":
        logits = model(images, training=True)
        loss = loss_fn(labels, logits)
        loss.backward()
        grads = [v.value.grad for v in model.trainable_variables]
    else:
        import jax

        def compute_loss(trainable, non_trainable):
            logits, non_trainable = model.stateless_call(
                trainable, non_trainable, images, training=True
            )
            return loss_fn(labels, logits), (logits, non_trainable)

        step = jax.jit(jax.value_and_grad(compute_loss, has_aux=True))
        (loss, (logits, non_trainable)), grads = step(
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
        )
        for variable, value in zip(model.non_trainable_variables, non_trainable):
            variable.assign(value)
    return loss, logits, grads


def probe(folder: Path) -> dict[str, np.ndarray]:
    """Save this backend's files (first run only), measure them, and load the other backends' files."""
    backend = keras.backend.backend()
    images, labels = fixed_batch()
    results = {"labels": labels}
    for name, kwargs in MODELS.items():
        weights, keras_file = (
            folder / f"{backend}-{name}.weights.h5",
            folder / f"{backend}-{name}.keras",
        )
        if not keras_file.exists():
            model = build_model(**kwargs)
            set_numpy_weights(model)
            results[f"logits|{name}"] = model(images, training=False)
            model.save_weights(weights)
            model.save(keras_file)
            loss, results[f"train_logits|{name}"], grads = training_step(model, images, labels)
            results[f"loss|{name}"] = loss
            for variable, grad in zip(model.trainable_variables, grads):
                results[f"grad|{name}|{variable.path}"] = grad
            for variable in model.non_trainable_variables:
                results[f"moving|{name}|{variable.path}"] = variable.value
        for source in BACKENDS:
            if source == backend or not (folder / f"{source}-{name}.keras").exists():
                continue
            model = build_model(**kwargs)
            model.load_weights(folder / f"{source}-{name}.weights.h5")
            results[f"weights_from|{source}|{name}"] = model(images, training=False)
            model = keras.saving.load_model(folder / f"{source}-{name}.keras")
            results[f"keras_from|{source}|{name}"] = model.predict(images, verbose=0)
    return {key: keras.ops.convert_to_numpy(value) for key, value in results.items()}


if __name__ == "__main__":
    folder, out = Path(sys.argv[1]), Path(sys.argv[2])
    np.savez(out, backend=keras.backend.backend(), **probe(folder))
