"""Saving and loading models for inference: registration on import, slim files, one-line errors, float32 serving."""

import collections
import hashlib
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from keras_ultimus.errors import UserError
from keras_ultimus.models.ultimus import build_model
from keras_ultimus.serving.loading import float32_copy, load_keras_model, save_for_inference
from tests.helpers import smooth_images


@pytest.fixture
def bf16_model_file(tmp_path):
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_model(conv_widths=(4, 8), num_blocks=2, residual=True)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    model.save(tmp_path / "model.keras")
    return tmp_path / "model.keras"


@pytest.mark.multi_backend
def test_a_bf16_trained_model_serves_in_float32_with_the_same_weights(bf16_model_file):
    loaded = load_keras_model(bf16_model_file)
    assert loaded.get_layer("conv1").dtype_policy.name == "mixed_bfloat16"  # as saved
    served = float32_copy(loaded)
    assert {layer.dtype_policy.name for layer in served.layers} == {"float32"}
    for a, b in zip(loaded.get_weights(), served.get_weights()):
        np.testing.assert_array_equal(a, b)
    images = smooth_images(4).astype("float32")
    want = build_model(
        conv_widths=(4, 8), num_blocks=2, residual=True
    )  # float32 twin, same weights
    want.set_weights(loaded.get_weights())
    got = keras.ops.convert_to_numpy(served(images))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(want(images)), rtol=1e-5, atol=1e-5)


def test_a_float32_model_is_served_as_it_is(tmp_path):
    model = build_model(conv_widths=(4, 8), num_blocks=1)
    assert float32_copy(model) is model


@pytest.mark.parametrize("name", ["missing.keras", "notes.txt"])
def test_a_path_that_is_no_model_is_a_user_error(tmp_path, name):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(UserError, match="not a .keras file"):
        load_keras_model(tmp_path / name)


ROOT = Path(__file__).resolve().parents[1]
COMMITTED_MODELS = subprocess.run(
    ["git", "ls-files", "*.keras"], cwd=ROOT, capture_output=True, text=True, check=True
).stdout.split()
# Fresh processes, both import orders: the package registers its serializables whether Keras came first or not.
LOAD_EVERY_COMMITTED_MODEL = """
import sys
{imports}
assert keras.backend.backend() == sys.argv[1], keras.backend.backend()
for path in sys.argv[2:]:
    keras.saving.load_model(path)
print("loaded", len(sys.argv) - 2)
"""


def load_in_fresh_process(imports: str, models: list[str]) -> subprocess.CompletedProcess:
    backend = keras.backend.backend()
    return subprocess.run(
        [
            sys.executable,
            "-c",
            LOAD_EVERY_COMMITTED_MODEL.format(imports=imports),
            backend,
            *models,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


@pytest.mark.multi_backend
def test_every_committed_model_loads_with_keras_after_importing_the_package():
    assert COMMITTED_MODELS, "no committed .keras files found"
    result = load_in_fresh_process("import keras_ultimus\nimport keras", COMMITTED_MODELS)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["loaded", str(len(COMMITTED_MODELS))]


@pytest.mark.parametrize(
    "imports",
    [
        "import keras\nimport keras_ultimus",
        "import keras_ultimus.training.losses\nimport keras",  # Keras first imported from inside a registering module
        "import keras_ultimus, importlib.util\nimportlib.util.find_spec('keras')\nimport keras",  # as TensorFlow does
    ],
)
def test_a_committed_model_loads_whatever_the_import_order(imports):
    result = load_in_fresh_process(imports, COMMITTED_MODELS[:1])
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["loaded", "1"]


def test_importing_the_package_registers_its_serializables_with_no_import_hook():
    code = (
        "import sys, keras_ultimus, keras\n"
        "print(type(sys.meta_path[0]).__module__.startswith('keras_ultimus'))\n"
        "for name in ('UltimusLayer', 'OneCycle', 'SmoothedSparseCrossentropy', 'LossScaleOptimizer'):\n"
        "    assert keras.saving.get_registered_object(f'keras_ultimus>{name}'), name\n"
        "print('registered')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.stdout.split() == ["False", "registered"], result.stderr[-2000:]
    assert not any("keras_ultimus" in type(f).__module__ for f in sys.meta_path)


def test_importing_the_package_with_a_bad_backend_is_an_import_error_in_a_library_user():
    code = "import keras_ultimus"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "KERAS_BACKEND": "tensorfow"},
    )
    assert result.returncode == 1
    assert "ImportError: Keras backend 'tensorfow'" in result.stderr
    assert "\nimport keras\n" not in result.stderr  # refused before Keras' own import


def weight_groups(path: Path) -> set[str]:
    """The top-level groups of a `.keras` file's weights: "optimizer" among them when it holds optimizer state."""
    with (
        zipfile.ZipFile(path) as archive,
        h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as h5,
    ):
        return set(h5.keys())


def test_committed_models_hold_no_optimizer_state_and_are_deflated():
    for name in COMMITTED_MODELS:
        assert "optimizer" not in weight_groups(ROOT / name), f"{name} holds optimizer state"
        with zipfile.ZipFile(ROOT / name) as archive:
            assert archive.getinfo("model.weights.h5").compress_type == zipfile.ZIP_DEFLATED, name


def test_committed_report_models_are_not_copies_of_each_other():
    digests = {}
    # A preset is a copy of its report's model; any other copy should link to the one committed.
    for name in COMMITTED_MODELS:
        if not name.startswith("keras_ultimus/presets/"):
            digest = hashlib.md5((ROOT / name).read_bytes()).hexdigest()
            assert digest not in digests, f"{name} is a copy of {digests[digest]}"
            digests[digest] = name


def test_the_tracked_tree_leaves_room_for_data_in_a_64_mib_device_call():
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    sizes = collections.Counter()
    for f in files.decode().split("\0"):
        if f and (ROOT / f).is_file():
            sizes["/".join(f.split("/")[:2])] += (ROOT / f).stat().st_size
    size = sum(sizes.values())
    largest = ", ".join(f"{k} {v / 2**20:.1f}" for k, v in sizes.most_common(5))
    # 30 MiB + 3 MiB of wheels + one 26.95 MiB sixth of the data (DEVELOPERS.md, "GPU runs") stay under 60 MiB
    assert size < 30 * 2**20, (
        f"tracked tree is {size / 2**20:.1f} MiB; the tree plus 3 MiB of wheels must stay under 33 "
        f"(largest, MiB: {largest})"
    )


@pytest.mark.multi_backend
def test_save_for_inference_drops_the_optimizer_and_keeps_the_weights_and_logits(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_model(conv_widths=(4, 8), num_blocks=2)
    model.compile(optimizer="adam", loss="mse")
    images = smooth_images(8).astype("float32")
    model.fit(images, np.zeros((8, 10)), epochs=1, verbose=0)  # creates Adam's slots
    model.save(tmp_path / "full.keras")
    save_for_inference(model, tmp_path / "slim.keras")
    assert "optimizer" in weight_groups(tmp_path / "full.keras")
    assert "optimizer" not in weight_groups(tmp_path / "slim.keras")
    assert (tmp_path / "slim.keras").stat().st_size < (tmp_path / "full.keras").stat().st_size / 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "full.keras",
        "slim.keras",
    ]  # no partial file left
    loaded = load_keras_model(tmp_path / "slim.keras")
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model(images)), keras.ops.convert_to_numpy(loaded(images))
    )
