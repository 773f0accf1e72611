"""Tests for keras_ultimus.predict: model loading, image reading, top-3 output."""

import json

import keras
import numpy as np
import pytest
from PIL import Image

from keras_ultimus import export, predict
from keras_ultimus.model import CLASS_NAMES, build_model
from tests.helpers import keras_probabilities, smooth_images


@pytest.fixture(scope="module")
def files(residual_model, tmp_path_factory):
    """The model as a .keras file and as a SavedModel export base folder."""
    root = tmp_path_factory.mktemp("models")
    residual_model.save(root / "model.keras")
    export.export_saved_model(residual_model, root / "ultimus")
    return root


@pytest.fixture
def inputs(tmp_path):
    """A PNG, a JPEG, a text file posing as an image and a .npy batch."""
    Image.fromarray(np.full((90, 50, 3), (10, 200, 30), np.uint8)).save(tmp_path / "green.png")
    Image.fromarray(smooth_images(1)[0].repeat(3, 0).repeat(3, 1)).save(tmp_path / "big.jpg", quality=95)
    (tmp_path / "notes.png").write_text("not an image")
    np.save(tmp_path / "batch.npy", smooth_images(3, seed=1))
    return tmp_path


def test_read_images_resizes_any_size_to_32x32(inputs):
    names, pixels = predict.read_images(inputs / "green.png")
    assert names == [str(inputs / "green.png")]
    assert pixels.shape == (1, 32, 32, 3) and pixels.dtype == np.uint8
    assert (pixels == np.array([10, 200, 30], np.uint8)).all()
    _, pixels = predict.read_images(inputs / "big.jpg")
    # 96x96 of 24-pixel blocks shrinks back to 8-pixel blocks; block centres survive JPEG + resize.
    centres = pixels[0, 4::8, 4::8].astype(int)
    assert np.abs(centres - smooth_images(1)[0, 4::8, 4::8]).max() < 12


def test_read_images_grayscale_becomes_rgb(tmp_path):
    Image.fromarray(np.full((40, 40), 77, np.uint8)).save(tmp_path / "gray.png")
    _, pixels = predict.read_images(tmp_path / "gray.png")
    assert pixels.shape == (1, 32, 32, 3) and (pixels == 77).all()


def test_read_images_npy_batch_names_each_image(inputs, tmp_path):
    names, pixels = predict.read_images(inputs / "batch.npy")
    assert names == [f"{inputs / 'batch.npy'}[{i}]" for i in range(3)]
    np.testing.assert_array_equal(pixels, smooth_images(3, seed=1))
    np.save(tmp_path / "one.npy", smooth_images(1)[0])
    assert predict.read_images(tmp_path / "one.npy")[1].shape == (1, 32, 32, 3)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("notes.png", b"not an image", "not a readable image"),
        ("cut.png", None, "not a readable image"),
        ("missing.jpg", False, "No such file"),
        ("float.npy", np.zeros((2, 32, 32, 3), np.float32), "must be uint8 (N, 32, 32, 3), got float32"),
        ("small.npy", np.zeros((2, 28, 28, 3), np.uint8), "got uint8 (2, 28, 28, 3)"),
        ("text.npy", b"hello", "not a readable image"),
    ],
)
def test_read_images_bad_file_is_one_line_naming_it(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(path, content)
    elif content is None:  # a PNG cut short
        Image.fromarray(smooth_images(1)[0]).save(path)
        path.write_bytes(path.read_bytes()[:100])
    elif content:
        path.write_bytes(content)
    with pytest.raises(predict.ImageError) as error:
        predict.read_images(path)
    text = str(error.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text


def test_top_classes_matches_python_sort():
    probabilities = np.random.default_rng(0).dirichlet(np.ones(10), size=20)
    for row, top in zip(probabilities, predict.top_classes(probabilities)):
        want = sorted(range(10), key=lambda c: -row[c])[:3]
        assert [t["class_id"] for t in top] == want
        assert [t["class_name"] for t in top] == [CLASS_NAMES[c] for c in want]
        assert [t["probability"] for t in top] == [row[c] for c in want]


def test_predict_runs_in_batches():
    calls = []

    def fake(images):
        calls.append(len(images))
        return np.eye(10, dtype=np.float32)[images[:, 0, 0, 0] % 10]

    images = np.zeros((600, 32, 32, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(600) % 256
    out = predict.predict(fake, images)
    assert calls == [256, 256, 88]
    np.testing.assert_array_equal(out.argmax(-1), (np.arange(600) % 256) % 10)


@pytest.mark.parametrize("kind", ["keras", "run-folder", "version-folder", "base-folder", "onnx"])
def test_every_model_kind_matches_keras(residual_model, files, kind, tmp_path):
    if kind == "onnx":
        pytest.importorskip("onnxruntime", reason="ONNX needs onnxruntime (pip install onnxruntime)")
        pytest.importorskip("tf2onnx", reason="ONNX export needs tf2onnx (pip install tf2onnx)")
        path = export.export_onnx(residual_model, tmp_path / "ultimus.onnx")
    else:
        path = {"keras": files / "model.keras", "run-folder": files, "version-folder": files / "ultimus" / "1",
                "base-folder": files / "ultimus"}[kind]  # fmt: skip
    images = smooth_images(8, seed=4)
    got = predict.load_predictor(path)(images)
    np.testing.assert_allclose(got, keras_probabilities(residual_model, images), atol=1e-5 if kind != "onnx" else 1e-4)


def test_base_folder_uses_latest_version(residual_model, tmp_path):
    keras.utils.set_random_seed(1)
    newer = build_model(residual=True)
    base = tmp_path / "ultimus"
    export.export_saved_model(residual_model, base)
    export.export_saved_model(newer, base)
    (base / "3").mkdir()  # an unfinished copy without saved_model.pb is not a version
    images = smooth_images(8, seed=5)
    got = predict.load_predictor(base)(images)
    np.testing.assert_allclose(got, keras_probabilities(newer, images), atol=1e-5)
    assert np.abs(got - keras_probabilities(residual_model, images)).max() > 1e-4


def test_cli_prints_top3_and_skips_bad_files(residual_model, files, inputs, capsys):
    args = [str(files / "ultimus"), str(inputs / "green.png"), str(inputs / "notes.png"), str(inputs / "batch.npy")]
    assert predict.main(args) == 1
    out, err = capsys.readouterr()
    assert err == f"error: {inputs / 'notes.png'}: not a readable image " f"(cannot identify image file '{inputs / 'notes.png'}')\n"
    lines = out.splitlines()
    want_names = [str(inputs / "green.png")] + [f"{inputs / 'batch.npy'}[{i}]" for i in range(3)]
    assert [line.split(": ")[0] for line in lines] == want_names
    pixels = np.concatenate([predict.read_images(inputs / "green.png")[1], smooth_images(3, seed=1)])
    for line, row in zip(lines, keras_probabilities(residual_model, pixels)):
        top = np.argsort(-row)[:3]
        assert line.split(": ")[1] == ", ".join(f"{CLASS_NAMES[c]} {row[c]:.3f}" for c in top)


def test_cli_json_output(residual_model, files, inputs, capsys):
    assert predict.main([str(files / "model.keras"), str(inputs / "batch.npy"), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in results] == [f"{inputs / 'batch.npy'}[{i}]" for i in range(3)]
    for r, row in zip(results, keras_probabilities(residual_model, smooth_images(3, seed=1))):
        assert [t["class_id"] for t in r["top"]] == list(np.argsort(-row)[:3])
        assert all(t["class_name"] == CLASS_NAMES[t["class_id"]] for t in r["top"])
        np.testing.assert_allclose([t["probability"] for t in r["top"]], np.sort(row)[::-1][:3], atol=1e-5)


def test_cli_bad_model_exits_2(tmp_path, inputs, capsys):
    assert predict.main([str(tmp_path / "nothing"), str(inputs / "green.png")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nothing'}: no such file or folder\n"
    (tmp_path / "empty").mkdir()
    assert predict.main([str(tmp_path / "empty"), str(inputs / "green.png")]) == 2
    assert "not a .keras file or a run folder" in capsys.readouterr().err
