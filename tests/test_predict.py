"""Tests for keras_ultimus.predict: model loading, image reading, top-3 output, fuzzed inputs, no TensorFlow."""

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import tracemalloc
import warnings
from importlib.util import find_spec
from pathlib import Path
from unittest import mock

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from keras_ultimus import predict
from keras_ultimus.models.ultimus import CLASS_NAMES, build_model
from keras_ultimus.serving import export as serving_export
from keras_ultimus.serving import predict as reading
from keras_ultimus.serving.loading import load_predictor
from tests.helpers import keras_probabilities, smooth_images


@pytest.fixture(scope="module")
def files(residual_model, tmp_path_factory):
    """The model as a .keras file and as a SavedModel export base folder."""
    root = tmp_path_factory.mktemp("models")
    residual_model.save(root / "model.keras")
    serving_export.export_saved_model(residual_model, root / "ultimus")
    return root


@pytest.fixture(scope="module")
def onnx_file(residual_model, tmp_path_factory):
    """The model exported to ONNX once for the module (tf2onnx takes seconds); skips without the ONNX extra."""
    pytest.importorskip("onnxruntime", reason="ONNX needs onnxruntime (pip install onnxruntime)")
    pytest.importorskip("tf2onnx", reason="ONNX export needs tf2onnx (pip install tf2onnx)")
    return serving_export.export_onnx(
        residual_model, tmp_path_factory.mktemp("onnx") / "ultimus.onnx"
    )


@pytest.fixture
def inputs(tmp_path):
    """A PNG, a JPEG, a text file posing as an image and a .npy batch."""
    Image.fromarray(np.full((90, 50, 3), (10, 200, 30), np.uint8)).save(tmp_path / "green.png")
    Image.fromarray(smooth_images(1)[0].repeat(3, 0).repeat(3, 1)).save(
        tmp_path / "big.jpg", quality=95
    )
    (tmp_path / "notes.png").write_text("not an image")
    np.save(tmp_path / "batch.npy", smooth_images(3, seed=1))
    return tmp_path


def test_read_images_resizes_any_size_to_32x32(inputs):
    names, pixels = reading.read_images(inputs / "green.png")
    assert names == [str(inputs / "green.png")]
    assert pixels.shape == (1, 32, 32, 3) and pixels.dtype == np.uint8
    assert (pixels == np.array([10, 200, 30], np.uint8)).all()
    _, pixels = reading.read_images(inputs / "big.jpg")
    # 96x96 of 24-pixel blocks shrinks back to 8-pixel blocks; block centres survive JPEG + resize.
    centres = pixels[0, 4::8, 4::8].astype(int)
    assert np.abs(centres - smooth_images(1)[0, 4::8, 4::8]).max() < 12


def test_read_images_grayscale_becomes_rgb(tmp_path):
    Image.fromarray(np.full((40, 40), 77, np.uint8)).save(tmp_path / "gray.png")
    _, pixels = reading.read_images(tmp_path / "gray.png")
    assert pixels.shape == (1, 32, 32, 3) and (pixels == 77).all()


def test_read_images_npy_batch_names_each_image(inputs, tmp_path):
    names, pixels = reading.read_images(inputs / "batch.npy")
    assert names == [f"{inputs / 'batch.npy'}[{i}]" for i in range(3)]
    np.testing.assert_array_equal(pixels, smooth_images(3, seed=1))
    np.save(tmp_path / "one.npy", smooth_images(1)[0])
    assert reading.read_images(tmp_path / "one.npy")[1].shape == (1, 32, 32, 3)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("notes.png", b"not an image", "not a readable image"),
        ("cut.png", None, "not a readable image"),
        ("missing.jpg", False, "No such file"),
        ("empty.png", b"", "empty file, not an image"),
        (
            "float.npy",
            np.zeros((2, 32, 32, 3), np.float32),
            "must be uint8 (N, 32, 32, 3), got float32",
        ),
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
    elif content is not False:
        path.write_bytes(content)
    with pytest.raises(reading.ImageError) as error:
        reading.read_images(path)
    text = str(error.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text


def test_top_classes_matches_python_sort():
    probabilities = np.random.default_rng(0).dirichlet(np.ones(10), size=20)
    for row, top in zip(probabilities, reading.top_classes(probabilities)):
        want = sorted(range(10), key=lambda c: -row[c])[:3]
        assert [t["class_id"] for t in top] == want
        assert [t["class_name"] for t in top] == [CLASS_NAMES[c] for c in want]
        assert [t["probability"] for t in top] == [row[c] for c in want]


def test_batches_fill_each_batch_across_inputs_in_order(tmp_path):
    images = np.zeros((600, 32, 32, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(600) % 256
    np.save(tmp_path / "a.npy", images[:500])
    np.save(tmp_path / "b.npy", images[500:])
    parts = list(reading.batches([tmp_path / "a.npy", tmp_path / "b.npy"], on_error=pytest.fail))
    assert [len(p) for _, p in parts] == [256, 256, 88]
    np.testing.assert_array_equal(np.concatenate([p for _, p in parts]), images)
    assert [n for names, _ in parts for n in names][498:502] == [
        f"{tmp_path / 'a.npy'}[498]",
        f"{tmp_path / 'a.npy'}[499]",
        f"{tmp_path / 'b.npy'}[0]",
        f"{tmp_path / 'b.npy'}[1]",
    ]


@pytest.mark.parametrize("kind", ["keras", "run-folder", "version-folder", "base-folder", "onnx"])
def test_every_model_kind_matches_keras(residual_model, files, kind, request):
    if kind == "onnx":
        path = request.getfixturevalue("onnx_file")
    else:
        path = {"keras": files / "model.keras", "run-folder": files, "version-folder": files / "ultimus" / "1",
                "base-folder": files / "ultimus"}[kind]  # fmt: skip
    images = smooth_images(8, seed=4)
    got = load_predictor(path)(images)
    np.testing.assert_allclose(
        got, keras_probabilities(residual_model, images), atol=1e-5 if kind != "onnx" else 1e-4
    )


def test_base_folder_uses_latest_version(residual_model, tmp_path):
    keras.utils.set_random_seed(1)
    newer = build_model(residual=True)
    base = tmp_path / "ultimus"
    serving_export.export_saved_model(residual_model, base)
    serving_export.export_saved_model(newer, base)
    (base / "3").mkdir()  # an unfinished copy without saved_model.pb is not a version
    images = smooth_images(8, seed=5)
    got = load_predictor(base)(images)
    np.testing.assert_allclose(got, keras_probabilities(newer, images), atol=1e-5)
    assert np.abs(got - keras_probabilities(residual_model, images)).max() > 1e-4


def test_cli_prints_top3_and_skips_bad_files(residual_model, files, inputs, capsys):
    args = [
        str(files / "ultimus"),
        str(inputs / "green.png"),
        str(inputs / "notes.png"),
        str(inputs / "batch.npy"),
    ]
    assert predict.main(args) == 2
    out, err = capsys.readouterr()
    assert (
        err == f"error: {inputs / 'notes.png'}: not a readable image "
        f"(cannot identify image file '{inputs / 'notes.png'}')\n"
    )
    lines = out.splitlines()
    want_names = [str(inputs / "green.png")] + [f"{inputs / 'batch.npy'}[{i}]" for i in range(3)]
    assert [line.split(": ")[0] for line in lines] == want_names
    pixels = np.concatenate(
        [reading.read_images(inputs / "green.png")[1], smooth_images(3, seed=1)]
    )
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
        np.testing.assert_allclose(
            [t["probability"] for t in r["top"]], np.sort(row)[::-1][:3], atol=1e-5
        )


def test_cli_bad_model_exits_2(tmp_path, inputs, capsys):
    assert predict.main([str(tmp_path / "nothing"), str(inputs / "green.png")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nothing'}: no such file or folder\n"
    (tmp_path / "empty").mkdir()
    assert predict.main([str(tmp_path / "empty"), str(inputs / "green.png")]) == 2
    assert "not a .keras file or a run folder" in capsys.readouterr().err


# ---- Fuzzing: every input ends in a classification or in one line naming it, with exit code 2 ----

HUGE_LIMIT = (
    4096  # Image.MAX_IMAGE_PIXELS during the fuzz test: "huge" is past it, "too huge" past twice it
)
colours = st.tuples(*[st.integers(0, 255)] * 3)
sizes = st.tuples(st.integers(1, 64), st.integers(1, 64))


def flat(colour) -> np.ndarray:
    """The (32, 32, 3) uint8 image every flat-coloured input should become."""
    return np.broadcast_to(np.array(colour, np.uint8), (32, 32, 3))


@st.composite
def good_inputs(draw):
    """(suffix, writer, expected pixels (N, 32, 32, 3), tolerance): valid images of every kind."""
    kind = draw(
        st.sampled_from(["rgb", "rgba", "gray", "gray16", "palette", "jpeg", "huge", "npy"])
    )
    (w, h), colour = draw(sizes), draw(colours)
    if kind == "huge":
        w = draw(st.integers(HUGE_LIMIT // 64 + 1, 2 * HUGE_LIMIT // 64))
        h = 64  # HUGE_LIMIT < w * h <= 2 * HUGE_LIMIT: Pillow warns, predict still reads it
    if kind in ("rgb", "huge", "jpeg"):
        image, want, tol = (
            Image.new("RGB", (w, h), colour),
            flat(colour),
            4 if kind == "jpeg" else 0,
        )
    elif kind == "rgba":
        image, want, tol = (
            Image.new("RGBA", (w, h), (*colour, draw(st.integers(0, 255)))),
            flat(colour),
            0,
        )
    elif kind == "gray":
        image, want, tol = Image.new("L", (w, h), colour[0]), flat([colour[0]] * 3), 0
    elif kind == "gray16":
        value = draw(st.integers(0, 65535))
        image = Image.fromarray(np.full((h, w), value, np.uint16))
        want, tol = (
            flat([np.rint(value / 257)] * 3),
            0,
        )  # 16-bit to 8-bit: divide by 257, not clip at 255
    elif kind == "palette":
        image = Image.new("P", (w, h), 5)
        image.putpalette([0, 0, 0] * 5 + list(colour))
        # A tRNS chunk: one transparent index, or per-entry alpha bytes (Pillow warns unless read via RGBA).
        image.info["transparency"] = draw(
            st.sampled_from([0, 5, bytes([255, 128, 0, 255, 255, 64])])
        )
        want, tol = flat(colour), 0
    else:
        batch = np.random.default_rng(draw(st.integers(0, 99))).integers(
            0, 256, (draw(st.integers(0, 3)), 32, 32, 3)
        )
        batch = batch.astype(np.uint8)
        return ".npy", lambda path: np.save(path, batch), batch, 0
    suffix = ".jpg" if kind == "jpeg" else ".png"
    return (
        suffix,
        lambda path: image.save(path, quality=95) if kind == "jpeg" else image.save(path),
        want[None],
        tol,
    )


@st.composite
def bad_inputs(draw):
    """(suffix, writer, message, None): inputs that must be named as bad."""
    kind = draw(
        st.sampled_from(
            ["empty", "text", "folder", "truncated", "too-huge", "npy-dtype", "npy-shape"]
        )
    )
    if kind == "empty":
        return ".png", lambda path: path.write_bytes(b""), "empty file", None
    if kind == "text":
        text = "not an image: " + draw(st.text(max_size=200))
        return (
            draw(st.sampled_from([".png", ".jpg", ".txt"])),
            lambda path: path.write_text(text),
            "not a readable image",
            None,
        )
    if kind == "folder":
        return "", lambda path: path.mkdir(), "a folder with no files to classify", None
    if kind == "truncated":
        image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), np.uint8))
        keep = draw(st.integers(0, 200))

        def write(path):
            image.save(path)
            path.write_bytes(path.read_bytes()[:keep])

        return ".png", write, "not a readable image" if keep else "empty file", None
    if kind == "too-huge":
        w = draw(st.integers(2 * HUGE_LIMIT + 1, 4 * HUGE_LIMIT))
        return (
            ".png",
            lambda path: Image.new("L", (w, 1)).save(path),
            "too large to decode safely",
            None,
        )
    array = (
        np.zeros((2, 32, 32, 3), np.float32)
        if kind == "npy-dtype"
        else np.zeros((2, 28, 28, 3), np.uint8)
    )
    return ".npy", lambda path: np.save(path, array), ".npy must be uint8 (N, 32, 32, 3)", None


@st.composite
def random_files(draw):
    """Arbitrary bytes, sometimes behind a real image format's magic number: either outcome is fine."""
    magic = draw(
        st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"P6\n"])
    )
    data = magic + draw(st.binary(max_size=300))
    return (
        draw(st.sampled_from([".png", ".jpg", ".bin"])),
        lambda path: path.write_bytes(data),
        None,
        None,
    )


def run_predict(inputs: list) -> tuple[int, list, list[str], list[np.ndarray], list[str]]:
    """Write `inputs` to a folder, run predict.main with a recording predictor: code, JSON, stderr lines, batches."""
    seen = []

    def predictor(images):
        seen.append(images.copy())
        return np.full((len(images), 10), 0.1, np.float32)

    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i, (suffix, write, *_) in enumerate(inputs):
            paths.append(Path(folder) / f"input{i}{suffix}")
            write(paths[-1])
        with mock.patch("keras_ultimus.serving.loading.load_predictor", lambda path: predictor):
            with mock.patch.object(Image, "MAX_IMAGE_PIXELS", HUGE_LIMIT):
                out, err = io.StringIO(), io.StringIO()
                with (
                    contextlib.redirect_stdout(out),
                    contextlib.redirect_stderr(err),
                    warnings.catch_warnings(),
                ):
                    warnings.simplefilter(
                        "error"
                    )  # a warning would print a second line to a user's stderr
                    code = predict.main(["model.keras", *map(str, paths), "--json"])
    return (
        code,
        json.loads(out.getvalue()),
        err.getvalue().splitlines(),
        seen,
        [str(p) for p in paths],
    )


@given(good_inputs())
def test_fuzzed_valid_image_is_classified(good):
    check_predict([good])


@given(bad_inputs())
def test_fuzzed_bad_input_is_named_in_one_line(bad):
    check_predict([bad])


@given(st.lists(st.one_of(good_inputs(), bad_inputs(), random_files()), min_size=1, max_size=4))
def test_fuzzed_mixed_inputs_are_classified_or_named_in_one_line(inputs):
    check_predict(inputs)


def check_predict(inputs: list) -> None:
    """Valid images are classified with the right pixels, bad ones named in one line each; exit 2 iff any bad."""
    code, results, errors, seen, paths = run_predict(inputs)
    assert all(line.startswith("error: ") and "Traceback" not in line for line in errors), errors
    named = {line.split(": ")[1] for line in errors}
    assert len(named) == len(errors), "each bad input is named once"
    assert code == (2 if errors else 0)
    pixels = np.concatenate(seen) if seen else np.zeros((0, 32, 32, 3), np.uint8)
    assert len(results) == len(pixels)
    got_names, row = [r["image"] for r in results], 0
    for path, (suffix, _, expected, tolerance) in zip(paths, inputs):
        if isinstance(expected, np.ndarray):  # a valid image: classified, with the right pixels
            assert path not in named
            n = len(expected)
            assert got_names[row : row + n] == (
                [f"{path}[{i}]" for i in range(n)] if suffix == ".npy" else [path]
            )
            diff = np.abs(pixels[row : row + n].astype(int) - expected.astype(int))
            assert diff.max(initial=0) <= tolerance
            row += n
        elif isinstance(expected, str):  # a bad input: named with the reason, never classified
            line = next(line for line in errors if line.split(": ")[1] == path)
            assert expected in line and path not in got_names
        else:  # random bytes: either one result or one error line
            assert (path in got_names) != (path in named)
            row += path in got_names
    assert row == len(results)


@pytest.mark.parametrize("kind, n", [("npy", 100_000), ("png-folder", 10_000)])
def test_big_inputs_stream_in_about_one_batch_of_memory(tmp_path, kind, n):
    """A 100,000-image .npy or a folder of 10,000 PNGs: traced peak memory under 2 float32 input batches."""
    labels = np.arange(n) % 10
    if kind == "npy":
        path = tmp_path / "big.npy"
        images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 32, 32, 3))
        for i in range(0, n, 10_000):
            images[i : i + 10_000] = labels[i : i + 10_000, None, None, None]
        images.flush()
        del images
    else:
        path = tmp_path / "pngs"
        path.mkdir()
        for i, label in enumerate(labels):
            Image.new("RGB", (32, 32), (int(label),) * 3).save(path / f"{i:05d}.png")
    seen = []

    def predictor(images):
        pixels = images.astype("float32")  # what a model's input costs
        seen.append(len(images))
        return np.eye(10, dtype=np.float32)[pixels[:, 0, 0, 0].astype(int) % 10]

    out, warm = tmp_path / "out.txt", tmp_path / "warm-up.png"
    Image.new("RGB", (32, 32)).save(warm)
    with mock.patch("keras_ultimus.serving.loading.load_predictor", lambda model: predictor):
        with open(out, "w") as file, contextlib.redirect_stdout(file):
            assert (
                predict.main(["model.keras", str(warm)]) == 0
            )  # one-time imports and caches: not measured
        seen.clear()
        tracemalloc.start()
        try:
            with open(out, "w") as file, contextlib.redirect_stdout(file):
                assert predict.main(["model.keras", str(path)]) == 0
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert sum(seen) == n and max(seen) == reading.BATCH_SIZE
    assert peak < 2 * reading.BATCH_SIZE * 32 * 32 * 3 * 4, f"{peak / 2**20:.1f} MiB"
    lines = out.read_text().splitlines()
    assert len(lines) == n
    assert all(lines[i].split(": ")[1].startswith(CLASS_NAMES[i % 10]) for i in range(0, n, 997))


def test_huge_image_at_default_limit_is_classified(tmp_path, capsys):
    """A real image past Pillow's default MAX_IMAGE_PIXELS (about 89 Mpx): classified, no warning printed."""
    side = 9500  # 90.25 Mpx, 1 byte per pixel
    Image.new("L", (side, side), 200).save(tmp_path / "huge.png")
    seen = []
    with mock.patch(
        "keras_ultimus.serving.loading.load_predictor",
        lambda path: lambda x: seen.append(x) or np.eye(10)[[3]],
    ):
        assert predict.main(["model.keras", str(tmp_path / "huge.png")]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.startswith(f"{tmp_path / 'huge.png'}: cat 1.000")
    assert (seen[0] == 200).all()


# ---- Without TensorFlow: torch and jax predict from .keras and .onnx; a SavedModel says it needs TensorFlow ----

REPO = Path(__file__).resolve().parents[1]
NO_TENSORFLOW = REPO / "tests" / "no_tensorflow"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_predict_where_tensorflow_is_unimportable(
    backend, residual_model, files, inputs, tmp_path, request
):
    pytest.importorskip(backend)
    models = {"keras": files / "model.keras", "savedmodel": files / "ultimus"}
    if backend == "torch" and find_spec("tf2onnx") and find_spec("onnxruntime"):
        models["onnx"] = request.getfixturevalue("onnx_file")
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([str(NO_TENSORFLOW), str(REPO)])}  # fmt: skip
    want = keras_probabilities(residual_model, smooth_images(3, seed=1))
    for kind, model in models.items():
        args = [sys.executable, "-m", "keras_ultimus.predict", str(model), str(inputs / "batch.npy"),
                str(inputs / "notes.png"), "--json"]  # fmt: skip
        result = subprocess.run(
            args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
        )
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        errors = result.stderr.splitlines()
        if kind == "savedmodel":
            assert len(errors) == 1 and "a SavedModel needs TensorFlow" in errors[0], result.stderr
            assert result.stdout == ""
            continue
        assert errors == [f"error: {inputs / 'notes.png'}: not a readable image "
                          f"(cannot identify image file '{inputs / 'notes.png'}')"]  # fmt: skip
        results = json.loads(result.stdout)
        assert [r["image"] for r in results] == [f"{inputs / 'batch.npy'}[{i}]" for i in range(3)]
        for r, row in zip(results, want):
            np.testing.assert_allclose(
                [t["probability"] for t in r["top"]], np.sort(row)[::-1][:3], atol=1e-4
            )
