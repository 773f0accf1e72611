"""The input pipelines (tf.data, NumPy, device): order by (seed, epoch), augmentation math, the choice, fit."""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_ultimus.datasets import batching, pipelines
from keras_ultimus.datasets.pydataset import ArrayBatches, reflect
from keras_ultimus.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
NO_TF = str(ROOT / "tests" / "no_tensorflow")
KINDS = ["numpy", "device"] + (["tfdata"] if pipelines.tensorflow_importable() else [])


def numbered_images(n: int) -> np.ndarray:
    """Image i is filled with i, so a batch's pixels name the images in it."""
    return np.repeat(np.arange(n, dtype=np.uint8), 32 * 32 * 3).reshape(n, 32, 32, 3)


def random_images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def epoch_batches(dataset, data_epoch, epoch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """All batches of `epoch`, read the way each pipeline is read outside fit."""
    data_epoch.on_epoch_begin(epoch)
    if isinstance(dataset, keras.utils.PyDataset):
        batches = [
            tuple(keras.ops.convert_to_numpy(t) for t in dataset[i]) for i in range(len(dataset))
        ]
        dataset.on_epoch_end()
        return batches
    return [(x.numpy(), y.numpy()) for x, y in dataset]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


@pytest.mark.multi_backend
@pytest.mark.parametrize("kind", KINDS)
def test_epoch_3_from_a_fresh_pipeline_equals_epoch_3_after_epochs_0_to_2(kind):
    images, labels = random_images(40), np.arange(40) % 10
    dataset, data_epoch = pipelines.train_data(images, labels, 16, seed=5, kind=kind, workers=0)
    seen = [epoch_batches(dataset, data_epoch, e) for e in range(4)]
    fresh, fresh_epoch = pipelines.train_data(images, labels, 16, seed=5, kind=kind, workers=0)
    assert_same_batches(epoch_batches(fresh, fresh_epoch, 3), seen[3])
    assert not np.array_equal(seen[2][0][1], seen[3][0][1])  # each epoch has its own order
    other, other_epoch = pipelines.train_data(images, labels, 16, seed=6, kind=kind, workers=0)
    assert not np.array_equal(epoch_batches(other, other_epoch, 3)[0][0], seen[3][0][0])


@pytest.mark.multi_backend
@pytest.mark.parametrize("kind", KINDS)
def test_training_epoch_is_a_permutation_and_eval_keeps_order(kind):
    images, labels = numbered_images(50), np.arange(50)
    dataset, data_epoch = pipelines.train_data(
        images, labels, 16, seed=1, augment=False, kind=kind, workers=0
    )
    batches = epoch_batches(dataset, data_epoch, 0)
    assert [len(y) for _, y in batches] == [16, 16, 16, 2]
    x0, y0 = batches[0]
    assert x0.dtype == np.float32 and y0.dtype == np.int32
    seen = np.concatenate([y for _, y in batches])
    assert sorted(seen.tolist()) == list(range(50)) and seen.tolist() != list(range(50))
    np.testing.assert_array_equal(x0[:, 0, 0, 0], y0)  # images travel with their labels
    eval_ds = pipelines.eval_data(images, labels, 16, kind=kind)
    order = [
        keras.ops.convert_to_numpy(y)
        for _, y in (eval_ds if kind == "tfdata" else (eval_ds[i] for i in range(len(eval_ds))))
    ]
    assert np.concatenate(order).tolist() == list(range(50))


@pytest.mark.multi_backend
@pytest.mark.parametrize("augment", [True, False])
def test_device_batches_are_the_numpy_pipelines_bit_for_bit_as_backend_tensors(augment):
    images, labels = random_images(40, seed=2), np.arange(40) % 10
    device, device_epoch = pipelines.train_data(
        images, labels, 16, seed=4, augment=augment, kind="device"
    )
    host, host_epoch = pipelines.train_data(
        images, labels, 16, seed=4, augment=augment, kind="numpy", workers=0
    )
    x, _ = device[0]
    assert keras.ops.is_tensor(x) and not isinstance(
        x, np.ndarray
    )  # a tensor of the backend, made on its device
    for epoch in (0, 2):
        assert_same_batches(
            epoch_batches(device, device_epoch, epoch), epoch_batches(host, host_epoch, epoch)
        )
    device_eval = pipelines.eval_data(images, labels, 16, kind="device")
    host_eval = pipelines.eval_data(images, labels, 16, kind="numpy")
    assert_same_batches(
        [
            tuple(keras.ops.convert_to_numpy(t) for t in device_eval[i])
            for i in range(len(device_eval))
        ],
        [host_eval[i] for i in range(len(host_eval))],
    )


def crops_of_padded(image: np.ndarray, result: np.ndarray) -> list[tuple[int, int, bool]]:
    """Every (dy, dx, flipped) whose crop of the NumPy reflect-padded image equals `result`."""
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)), mode="reflect")
    found = []
    for dy in range(9):
        for dx in range(9):
            crop = padded[dy : dy + 32, dx : dx + 32]
            found += [
                (dy, dx, flip)
                for flip in (False, True)
                if np.array_equal(crop[:, ::-1] if flip else crop, result)
            ]
    return found


@pytest.mark.multi_backend
@pytest.mark.parametrize("kind", KINDS)
def test_augmented_images_are_padded_crops_or_their_mirrors(kind):
    images = random_images(24)
    dataset, data_epoch = pipelines.train_data(
        images, np.arange(24) % 10, 24, seed=0, kind=kind, workers=0
    )
    ((x, _),) = epoch_batches(dataset, data_epoch, 0)
    order = epoch_batches(
        *pipelines.train_data(
            images, np.arange(24), 24, seed=0, augment=False, kind=kind, workers=0
        ),
        0,
    )[0][1]
    shifts = flips = 0
    for source, result in zip(images[order], x.astype(np.uint8)):
        matches = crops_of_padded(source, result)
        assert matches, "output is not a crop of the reflect-padded image"
        shifts += any((dy, dx) != (4, 4) for dy, dx, _ in matches)
        flips += all(flip for *_, flip in matches)
    assert shifts > 12 and 4 < flips < 20


def test_reflect_matches_numpy_reflect_padding():
    row = np.arange(32)
    np.testing.assert_array_equal(row[reflect(np.arange(-4, 36))], np.pad(row, 4, mode="reflect"))


def test_resolve_chooses_and_refuses(monkeypatch):
    assert pipelines.resolve("numpy") == "numpy" and pipelines.resolve("device") == "device"
    with pytest.raises(UserError, match="unknown pipeline 'grain'"):
        pipelines.resolve("grain")
    monkeypatch.setattr(pipelines, "tensorflow_importable", lambda: False)
    assert pipelines.resolve("auto") == "numpy"
    with pytest.raises(UserError, match="needs TensorFlow") as e:
        pipelines.resolve("tfdata")
    assert "\n" not in str(e.value)
    monkeypatch.setattr(pipelines, "tensorflow_importable", lambda: True)
    assert pipelines.resolve("auto") == "tfdata"


class Recorder(keras.layers.Layer):
    """Identity layer that keeps a copy of every training batch it sees (the model runs eagerly)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen = []

    def call(self, x, training=None):
        if training:
            self.seen.append(keras.ops.convert_to_numpy(x).copy())
        return x


def fit_and_record(kind: str, initial_epoch: int, epochs: int, workers: int) -> list[np.ndarray]:
    images, labels = random_images(24, seed=1), np.arange(24) % 10
    dataset, data_epoch = pipelines.train_data(
        images, labels, 8, seed=3, kind=kind, workers=workers
    )
    recorder = Recorder()
    model = keras.Sequential(
        [keras.Input((32, 32, 3)), recorder, keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    model.compile(
        "sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True
    )
    model.fit(
        dataset,
        epochs=epochs,
        initial_epoch=initial_epoch,
        shuffle=False,
        callbacks=[data_epoch],
        verbose=0,
    )
    return recorder.seen


@pytest.mark.multi_backend
@pytest.mark.parametrize("kind,workers", [(k, 0) for k in KINDS] + [("numpy", 2)])
def test_fit_resumed_at_epoch_3_sees_the_batches_of_an_uninterrupted_run(kind, workers):
    whole = fit_and_record(kind, 0, 4, workers)
    resumed = fit_and_record(kind, 3, 4, workers)
    assert len(whole) == 12 and len(resumed) == 3
    assert_same_batches([(x, 0) for x in whole[9:]], [(x, 0) for x in resumed])
    assert not np.array_equal(whole[6], whole[9])


@pytest.mark.skipif("tfdata" not in KINDS, reason="TensorFlow is not importable")
def test_tfdata_hides_gpus_from_tensorflow_under_other_backends(monkeypatch):
    import tensorflow as tf

    from keras_ultimus.datasets import tfdata

    calls = []
    monkeypatch.setattr(tf.config, "set_visible_devices", lambda *args: calls.append(args))
    tfdata.hide_gpus_from_tensorflow("tensorflow")
    assert calls == []
    for backend in ("torch", "jax"):
        tfdata.hide_gpus_from_tensorflow(backend)
    assert calls == [([], "GPU"), ([], "GPU")]


def run_python(
    code: str, backend: str, no_tensorflow: bool = False, args=()
) -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if no_tensorflow:
        env["PYTHONPATH"] = os.pathsep.join([NO_TF, str(ROOT)])
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.skipif("tfdata" not in KINDS, reason="TensorFlow is not importable")
def test_importing_tfdata_under_torch_hides_gpus_before_any_tf_data_op():
    code = (
        "import tensorflow as tf\n"
        "calls = []\n"
        "tf.config.set_visible_devices = lambda *a: calls.append(a)\n"
        "import keras_ultimus.datasets.tfdata\n"
        "assert calls == [([], 'GPU')], calls\n"
    )
    result = run_python(code, "torch")
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_numpy_pipeline_trains_where_tensorflow_cannot_be_imported(backend):
    code = (
        "import numpy as np, keras\n"
        "from keras_ultimus.datasets import pipelines\n"
        "try:\n    import tensorflow\nexcept ImportError:\n    pass\n"
        "else:\n    raise SystemExit('tensorflow imported')\n"
        "assert pipelines.resolve('auto') == 'numpy'\n"
        "x = np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)\n"
        "ds, cb = pipelines.train_data(x, np.arange(32) % 10, 8, workers=2)\n"
        "m = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(10)])\n"
        "m.compile('sgd', keras.losses.SparseCategoricalCrossentropy(from_logits=True))\n"
        "m.fit(ds, epochs=2, shuffle=False, callbacks=[cb], verbose=0)\n"
        "m.evaluate(pipelines.eval_data(x, np.arange(32) % 10, 8), verbose=0)\n"
        "print('ok', keras.backend.backend())\n"
    )
    result = run_python(code, backend, no_tensorflow=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["ok", backend]


@pytest.mark.multi_backend
def test_batches_computed_ahead_for_one_epoch_are_never_served_in_another():
    images, labels = random_images(40), np.arange(40) % 10
    threaded = ArrayBatches(images, labels, 8, seed=4, training=True, workers=2)
    threaded[0]  # computes batches 1-4 of epoch 0 ahead
    threaded.set_epoch(1)
    plain = ArrayBatches(images, labels, 8, seed=4, training=True)
    plain.set_epoch(1)
    assert_same_batches(
        [threaded[i] for i in range(len(threaded))], [plain[i] for i in range(len(plain))]
    )


@pytest.mark.parametrize("n, batch, want", [(1, 8, 1), (8, 8, 1), (9, 8, 2), (50_000, 512, 98)])
def test_batches_per_epoch_keeps_the_smaller_last_batch(n, batch, want):
    assert batching.batches_per_epoch(n, batch) == want == int(np.ceil(n / batch))
