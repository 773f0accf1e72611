"""Tests for keras_ultimus.export: SavedModel for TF Serving, ONNX, and the CLI."""

import errno
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ultimus import export
from keras_ultimus.errors import UserError
from keras_ultimus.models.ultimus import CLASS_NAMES, build_model
from keras_ultimus.serving import export as serving_export
from keras_ultimus.serving.loading import load_keras_model
from tests.helpers import keras_probabilities, smooth_images, softmax

REPO = Path(__file__).resolve().parents[1]
NO_TENSORFLOW = REPO / "tests" / "no_tensorflow"
TF_QUIET = {"TF_CPP_MIN_LOG_LEVEL": "3"}


def assert_classes_match(class_id, class_name, want_probabilities, tolerance):
    """Ids equal NumPy's argmax wherever the top-2 gap exceeds twice `tolerance`; names follow ids."""
    top2 = np.sort(want_probabilities, axis=-1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * tolerance
    assert clear.sum() >= len(clear) // 2, "test images give too few clear-cut predictions"
    want = want_probabilities.argmax(-1)
    np.testing.assert_array_equal(np.asarray(class_id)[clear], want[clear])
    names = [n.decode() if isinstance(n, bytes) else n for n in class_name]
    assert names == [CLASS_NAMES[i] for i in class_id]


def run(args, **kwargs) -> subprocess.CompletedProcess:
    """Run a command, capturing text output, with TensorFlow's C++ logging off."""
    env = {**os.environ, **TF_QUIET, **kwargs.pop("env", {})}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def exported(residual_model, tmp_path_factory):
    return serving_export.export_saved_model(
        residual_model, tmp_path_factory.mktemp("export") / "ultimus"
    )


def test_versions_count_up_and_never_overwrite(residual_model, tmp_path):
    base = tmp_path / "ultimus"
    first = serving_export.export_saved_model(residual_model, base)
    assert first == base / "1"
    assert (first / "saved_model.pb").is_file() and (first / "variables").is_dir()
    before = (first / "saved_model.pb").stat().st_mtime_ns
    (base / "7").mkdir()
    (base / "notes").mkdir()
    assert serving_export.export_saved_model(residual_model, base) == base / "8"
    assert (first / "saved_model.pb").stat().st_mtime_ns == before
    assert sorted(p.name for p in base.iterdir()) == ["1", "7", "8", "notes"]


@pytest.mark.parametrize(
    "error", [OSError("read-only"), OSError(errno.ENOSPC, "No space left on device")]
)
def test_failed_export_leaves_no_version_folder(residual_model, tmp_path, monkeypatch, error):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(tf.saved_model, "save", fail)
    if error.errno is None:  # exit 2 through the CLI
        expected = pytest.raises(
            UserError, match="ultimus: cannot write the export \\(read-only\\)"
        )
    else:  # a full disk: an OSError naming the target, which the CLI reports in one line with exit 3
        expected = pytest.raises(OSError, match="No space left on device")
    with expected as caught:
        serving_export.export_saved_model(residual_model, tmp_path / "ultimus")
    if error.errno is not None:
        assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(
            tmp_path / "ultimus"
        )
    assert list((tmp_path / "ultimus").iterdir()) == []


def test_serving_default_matches_keras_in_process(residual_model, exported):
    images = smooth_images(32)
    out = tf.saved_model.load(str(exported)).signatures["serving_default"](
        images=tf.constant(images)
    )
    assert set(out) == {"probabilities", "class_id", "class_name"}
    assert out["probabilities"].dtype == tf.float32 and out["class_id"].dtype == tf.int64
    want = keras_probabilities(residual_model, images)
    np.testing.assert_allclose(out["probabilities"].numpy(), want, atol=1e-5)
    assert_classes_match(out["class_id"].numpy(), out["class_name"].numpy(), want, 1e-5)


@pytest.mark.parametrize(
    "images, message",
    [
        (
            np.zeros((2, 32, 32, 3), np.float32),
            "expected to be a uint8 tensor but is a float tensor",
        ),
        (np.zeros((32, 32, 3), np.uint8), r"Shape of tensor images \[32,32,3\] is not compatible"),
        (
            np.zeros((2, 28, 28, 3), np.uint8),
            r"Shape of tensor images \[2,28,28,3\] is not compatible",
        ),
        (
            np.zeros((2, 32, 32, 1), np.uint8),
            r"Shape of tensor images \[2,32,32,1\] is not compatible",
        ),
    ],
    ids=["float", "rank3", "28x28", "1channel"],
)
def test_signature_refuses_bad_input(exported, images, message):
    serve = tf.saved_model.load(str(exported)).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        serve(images=tf.constant(images))


@pytest.mark.slow
def test_loads_in_fresh_tensorflow_only_process(residual_model, exported, tmp_path):
    """A server's view: TensorFlow alone, with keras and keras_ultimus made unimportable."""
    for name in ("keras", "keras_ultimus"):
        (tmp_path / "hide" / name).mkdir(parents=True)
        (tmp_path / "hide" / name / "__init__.py").write_text(
            f"raise ImportError('{name} is hidden')\n"
        )
    images = smooth_images(32, seed=1)
    np.save(tmp_path / "images.npy", images)
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        import tensorflow as tf

        serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
        out = serve(images=tf.constant(np.load("images.npy")))
        np.savez("out.npz", **{k: v.numpy() for k, v in out.items()})
        print(sorted(m for m in ("keras", "keras_ultimus") if m in sys.modules))
        """
    )
    result = run(
        [sys.executable, "-c", script, str(exported)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "hide")},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
    out = np.load(tmp_path / "out.npz", allow_pickle=True)
    want = keras_probabilities(residual_model, images)
    assert out["probabilities"].dtype == np.float32 and out["class_id"].dtype == np.int64
    np.testing.assert_allclose(out["probabilities"], want, atol=1e-5)
    assert_classes_match(out["class_id"], out["class_name"], want, 1e-5)


@pytest.mark.slow
def test_saved_model_cli_lists_signature(exported):
    cli = shutil.which("saved_model_cli")
    assert cli, "saved_model_cli (installed with tensorflow) is not on PATH"
    result = run([cli, "show", "--all", "--dir", str(exported)])
    assert result.returncode == 0, result.stderr[-2000:]
    text = " ".join(result.stdout.split())
    signature = text.split("signature_def['serving_default']:")[1].split("Method name is:")[0]
    for expected in (
        "inputs['images'] tensor_info: dtype: DT_UINT8 shape: (-1, 32, 32, 3)",
        "outputs['probabilities'] tensor_info: dtype: DT_FLOAT shape: (-1, 10)",
        "outputs['class_id'] tensor_info: dtype: DT_INT64 shape: (-1)",
        "outputs['class_name'] tensor_info: dtype: DT_STRING shape: (-1)",
    ):
        assert expected in signature


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_exports_keras_file_saved_under_other_backend(backend, tmp_path):
    pytest.importorskip(backend)
    save = textwrap.dedent(
        """
        import sys
        import keras
        import numpy as np
        from keras_ultimus.models.ultimus import build_model

        assert keras.backend.backend() == sys.argv[1]
        keras.utils.set_random_seed(0)
        model = build_model(residual=True)
        images = np.load("images.npy")
        np.save("logits.npy", keras.ops.convert_to_numpy(model(images.astype("float32"))))
        model.save("model.keras")
        """
    )
    images = smooth_images(16, seed=2)
    np.save(tmp_path / "images.npy", images)
    env = {"KERAS_BACKEND": backend, "PYTHONPATH": str(REPO)}
    result = run([sys.executable, "-c", save, backend], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-2000:]

    version = serving_export.export_saved_model(
        load_keras_model(tmp_path / "model.keras"), tmp_path / "ultimus"
    )
    out = tf.saved_model.load(str(version)).signatures["serving_default"](
        images=tf.constant(images)
    )
    want = softmax(np.load(tmp_path / "logits.npy").astype(np.float64))
    np.testing.assert_allclose(out["probabilities"].numpy(), want, atol=1e-5)
    assert_classes_match(out["class_id"].numpy(), out["class_name"].numpy(), want, 1e-5)


@pytest.mark.slow
def test_cli_started_under_torch_restarts_on_tensorflow(residual_model, tmp_path):
    pytest.importorskip("torch")
    residual_model.save(tmp_path / "model.keras")
    env = {"KERAS_BACKEND": "torch", "PYTHONPATH": str(REPO)}
    result = run(
        [sys.executable, "-m", "keras_ultimus.export", "model.keras", "--out", "ultimus"],
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("-> ultimus/1")
    assert (tmp_path / "ultimus" / "1" / "saved_model.pb").is_file()


def test_export_refuses_other_backends(residual_model, tmp_path, monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(UserError, match="needs the TensorFlow backend"):
        serving_export.export_saved_model(residual_model, tmp_path / "ultimus")
    assert not (tmp_path / "ultimus").exists()


def test_onnx_matches_keras_and_keeps_the_signature(residual_model, tmp_path):
    ort = pytest.importorskip(
        "onnxruntime", reason="ONNX export needs onnxruntime (pip install onnxruntime)"
    )
    pytest.importorskip("tf2onnx", reason="ONNX export needs tf2onnx (pip install tf2onnx)")
    path = serving_export.export_onnx(residual_model, tmp_path / "ultimus.onnx")
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [(i.name, i.type, i.shape[1:]) for i in session.get_inputs()] == [
        ("images", "tensor(uint8)", [32, 32, 3])
    ]
    assert {o.name: o.type for o in session.get_outputs()} == {
        "probabilities": "tensor(float)", "class_id": "tensor(int64)", "class_name": "tensor(string)",
    }  # fmt: skip
    images = smooth_images(32, seed=3)
    probabilities, class_id, class_name = session.run(
        ["probabilities", "class_id", "class_name"], {"images": images}
    )
    want = keras_probabilities(residual_model, images)
    np.testing.assert_allclose(probabilities, want, atol=1e-4)
    assert_classes_match(class_id, class_name, want, 1e-4)
    with pytest.raises(Exception, match="tensor\\(float\\)"):
        session.run(None, {"images": images.astype(np.float32)})
    with pytest.raises(UserError, match="already exists"):
        serving_export.export_onnx(residual_model, path)


def test_cli_exports_run_folder(residual_model, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    residual_model.save(run_dir / "model.keras")
    assert export.main([str(run_dir), "--out", str(tmp_path / "ultimus")]) == 0
    assert f"-> {tmp_path / 'ultimus' / '1'}" in capsys.readouterr().out
    loaded = tf.saved_model.load(str(tmp_path / "ultimus" / "1")).signatures["serving_default"]
    images = smooth_images(4)
    np.testing.assert_allclose(
        loaded(images=tf.constant(images))["probabilities"].numpy(),
        keras_probabilities(residual_model, images),
        atol=1e-5,
    )


def test_cli_exports_a_bf16_trained_model_that_serves_in_float32(residual_model, tmp_path):
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        bf16 = build_model(residual=True)  # residual_model's architecture under the bf16 policy
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    bf16.set_weights(residual_model.get_weights())
    assert bf16.get_layer("conv1").compute_dtype == "bfloat16"
    bf16.save(tmp_path / "model.keras")
    assert export.main([str(tmp_path / "model.keras"), "--out", str(tmp_path / "ultimus")]) == 0
    serve = tf.saved_model.load(str(tmp_path / "ultimus" / "1")).signatures["serving_default"]
    images = smooth_images(4)
    probabilities = serve(images=tf.constant(images))["probabilities"]
    assert probabilities.dtype == tf.float32
    # float32 compute: the float32 model's answer to float32 rounding, far tighter than bfloat16's ~1e-2
    np.testing.assert_allclose(
        probabilities.numpy(), keras_probabilities(residual_model, images), atol=1e-5
    )


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.keras", "not a .keras file or a run folder"),
        (lambda d: d, "not a .keras file or a run folder with model.keras"),
        (
            lambda d: (d / "junk.keras").write_text("not a zip") and d / "junk.keras",
            "cannot load model",
        ),
    ],
    ids=["missing", "folder-without-model", "corrupt"],
)
def test_cli_bad_model_is_one_line_error(tmp_path, capsys, make, message):
    source = make(tmp_path)
    assert export.main([str(source), "--out", str(tmp_path / "ultimus")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "ultimus").exists()


def test_cli_help_names_the_formats(capsys):
    with pytest.raises(SystemExit) as exit_info:
        export.main(["--help"])
    assert exit_info.value.code == 0
    assert "--format {savedmodel,onnx}" in capsys.readouterr().out


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    """Exit code 2 and exactly one `error: ...` line on stderr holding every needle."""
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


@pytest.mark.parametrize("format", ["savedmodel", "onnx"])
def test_cli_out_blocked_by_a_file_is_one_line_error(residual_model, tmp_path, capsys, format):
    residual_model.save(tmp_path / "model.keras")
    (tmp_path / "file").write_text("in the way")
    outs = {"savedmodel": [("file", "is a file; a SavedModel export needs a folder"),
                           ("file/ultimus", "a file is in the way")],
            "onnx": [("file/ultimus", "a file is in the way")]}[format]  # fmt: skip
    for out, message in outs:
        code = export.main(
            [str(tmp_path / "model.keras"), "--out", str(tmp_path / out), "--format", format]
        )
        assert_one_line_error(code, capsys.readouterr().err, message)
    assert (tmp_path / "file").read_text() == "in the way"


def test_cli_onnx_never_overwrites_a_folder_named_like_the_file(residual_model, tmp_path, capsys):
    residual_model.save(tmp_path / "model.keras")
    (tmp_path / "ultimus.onnx").mkdir()
    code = export.main(
        [str(tmp_path / "model.keras"), "--out", str(tmp_path / "ultimus"), "--format", "onnx"]
    )
    assert_one_line_error(code, capsys.readouterr().err, "ultimus.onnx: already exists")


def test_cli_without_tensorflow_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(
        export, "find_spec", lambda name: None if name == "tensorflow" else object()
    )
    code = export.main([str(tmp_path / "model.keras"), "--out", str(tmp_path / "ultimus")])
    assert_one_line_error(code, capsys.readouterr().err, "export needs TensorFlow: pip install")
    assert not (tmp_path / "ultimus").exists()


@pytest.mark.slow
def test_main_under_another_backend_runs_a_child_and_returns_its_code(
    residual_model, tmp_path, monkeypatch
):
    """Called in-process (a notebook, a test) with Keras on torch, export must not replace this process."""
    residual_model.save(tmp_path / "model.keras")
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    assert export.main([str(tmp_path / "model.keras"), "--out", str(tmp_path / "ultimus")]) == 0
    assert (tmp_path / "ultimus" / "1" / "saved_model.pb").is_file()
    assert export.main([str(tmp_path / "missing.keras"), "--out", str(tmp_path / "ultimus")]) == 2
    assert sorted(p.name for p in (tmp_path / "ultimus").iterdir()) == ["1"]


@pytest.mark.slow
def test_cli_where_tensorflow_is_unimportable_is_one_line_error(residual_model, tmp_path):
    pytest.importorskip("torch")
    residual_model.save(tmp_path / "model.keras")
    env = {"KERAS_BACKEND": "torch", "PYTHONPATH": os.pathsep.join([str(NO_TENSORFLOW), str(REPO)])}
    result = run(
        [sys.executable, "-m", "keras_ultimus.export", "model.keras"], cwd=tmp_path, env=env
    )
    assert_one_line_error(result.returncode, result.stderr, "tensorflow", "pip install")
    assert result.stdout == "" and not (tmp_path / "export").exists()
