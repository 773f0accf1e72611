"""SavedModel and ONNX export of a trained model, with raw uint8 pixels in and class probabilities out.

SavedModel goes to the TF Serving layout `BASE/<version>/`, a new integer version each time. Its `serving_default`
signature takes `images` (uint8, [None, 32, 32, 3], raw pixels) and returns `probabilities` (float32 [None, 10]),
`class_id` (int64 [None]) and `class_name` (string [None]). The ONNX file holds the same function, with the same
names and dtypes. Normalisation is inside the model, so clients send raw pixels. Both run on the TensorFlow backend.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from keras_ultimus.backend import INSTALL, INSTALL_ONNX
from keras_ultimus.errors import NO_SPACE, UserError, one_line
from keras_ultimus.runs.folder import FolderLock

if TYPE_CHECKING:
    import keras

NEEDS_TENSORFLOW = f"export needs TensorFlow: {INSTALL['tensorflow']}"


def image_spec():
    """The serving input: uint8 raw pixels, [None, 32, 32, 3], named `images`."""
    import tensorflow as tf

    return tf.TensorSpec([None, 32, 32, 3], tf.uint8, name="images")


def require_tensorflow() -> None:
    """Raise UserError unless Keras runs on the TensorFlow backend."""
    import keras

    if keras.backend.backend() != "tensorflow":
        raise UserError(
            f"export needs the TensorFlow backend, this process uses "
            f"{keras.backend.backend()!r}: set KERAS_BACKEND=tensorflow"
        )


def next_version(base: Path) -> int:
    """One more than the largest integer version folder under `base`, from 1."""
    versions = [int(p.name) for p in base.iterdir() if p.name.isdigit()] if base.is_dir() else []
    return max(versions, default=0) + 1


def serving_fn(model: keras.Model):
    """The serving function: uint8 images in; probabilities, class ids and names out."""
    import tensorflow as tf

    from keras_ultimus.constants import CLASS_NAMES

    class_names = tf.constant(CLASS_NAMES)
    shape = image_spec().shape

    def serve(images):
        # Signatures don't check shapes themselves; this refuses wrong rank or size.
        images = tf.ensure_shape(images, shape)
        logits = model(tf.cast(images, tf.float32), training=False)
        class_id = tf.argmax(logits, axis=-1, output_type=tf.int64)
        return {
            "probabilities": tf.nn.softmax(logits, axis=-1),
            "class_id": class_id,
            "class_name": tf.gather(class_names, class_id),
        }

    return serve


def export_saved_model(model: keras.Model, base: str | os.PathLike) -> Path:
    """Write `model` as SavedModel version `base/<next version>/` and return that folder."""
    require_tensorflow()
    import keras

    base = Path(base)
    if base.exists() and not base.is_dir():
        raise UserError(
            f"{base}: is a file; a SavedModel export needs a folder (it gets {base}/<version>/)"
        )
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serving_fn(model), input_signature=[image_spec()])
    make_folder(base)
    with FolderLock(base):  # two exports to one base would pick the same version
        version = next_version(base)
        # Write beside the final name and rename, so a failure leaves no version folder
        # and TF Serving (which only loads integer folders) never sees a partial one.
        partial = base / f".partial-{version}"
        try:
            archive.write_out(partial, verbose=False)
            partial.rename(base / str(version))
        except (
            OSError
        ) as e:  # a full disk (exit 3) or a read-only folder (exit 2): say where, in one line
            raise write_error(e, base) from None
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return base / str(version)


def _erfc_as_one_minus_erf(ctx, node, name, args):
    """tf2onnx handler: TF's exact GELU uses Erfc, which ONNX lacks; erfc(x) = 1 - erf(x)."""
    import numpy as np
    from tf2onnx import utils

    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    erf = ctx.make_node("Erf", [node.input[0]])
    one = ctx.make_const(utils.make_name(f"{name}_one"), np.array(1, dtype))
    node.type = "Sub"
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])


def export_onnx(model: keras.Model, path: str | os.PathLike) -> Path:
    """Write the serving function (same inputs and outputs as the SavedModel) to ONNX `path`.

    Not `model.export(format="onnx")`: with tf2onnx 1.17 that leaves the
    Normalization constants as extra graph inputs and fails on the Erfc op of
    TF's exact GELU. Freezing the function first and mapping Erfc to 1 - Erf
    fixes both. The file is checked against TensorFlow with onnxruntime.
    """
    require_tensorflow()
    import numpy as np
    import tensorflow as tf

    path = Path(path)
    if path.exists():
        raise UserError(f"{path}: already exists; exports never overwrite")
    try:
        import onnxruntime
        import tf2onnx
        from tensorflow.python.framework.convert_to_constants import (
            convert_variables_to_constants_v2,
        )
    except ImportError as e:
        raise UserError(
            f"ONNX export needs tf2onnx and onnxruntime ({e}): {INSTALL_ONNX}"
        ) from None
    serve = tf.function(serving_fn(model), input_signature=[image_spec()])
    concrete = serve.get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)
    # Flattened outputs follow the sorted keys of the returned dict.
    output_names = dict(zip((t.name for t in frozen.outputs), sorted(concrete.structured_outputs)))
    make_folder(path.parent)
    partial = path.with_name(f".partial-{path.name}")
    with FolderLock(path.parent, name=f".{path.name}.lock"):  # one export to one file at a time
        if path.exists():
            raise UserError(f"{path}: already exists; exports never overwrite")
        tf_logger, level = tf.get_logger(), tf.get_logger().level
        tf_logger.setLevel("ERROR")  # tf2onnx calls TF1 graph tools that print deprecation notices
        try:
            tf2onnx.convert.from_graph_def(
                frozen.graph.as_graph_def(),
                name="ultimus",
                input_names=["images:0"],
                output_names=list(output_names),
                tensors_to_rename={"images:0": "images", **output_names},
                custom_op_handlers={"Erfc": (_erfc_as_one_minus_erf, [])},
                output_path=str(partial),
            )
            images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), np.uint8)
            want = serve(images)["probabilities"].numpy()
            try:
                session = onnxruntime.InferenceSession(partial, providers=["CPUExecutionProvider"])
                got = session.run(["probabilities"], {"images": images})[0]
            except Exception as e:
                raise UserError(
                    f"onnxruntime cannot run the converted model ({e})".splitlines()[0]
                ) from None
            if not np.allclose(got, want, atol=1e-4):
                raise UserError(
                    f"ONNX output differs from TensorFlow by {np.abs(got - want).max():.2g}"
                )
            partial.rename(path)
        except (
            OSError
        ) as e:  # a full disk (exit 3) or a read-only folder (exit 2): say where, in one line
            raise write_error(e, path) from None
        finally:
            tf_logger.setLevel(level)
            partial.unlink(missing_ok=True)
    return path


def write_error(error: OSError, path: Path) -> Exception:
    """The error to raise for a failed export write: a full disk stays an OSError (exit 3), the rest a UserError."""
    if error.errno in NO_SPACE:
        return OSError(error.errno, error.strerror, str(path))
    return UserError(f"{path}: cannot write the export ({one_line(error.strerror or error)})")


def make_folder(folder: Path) -> None:
    """Create `folder` and its parents, or raise UserError naming what is in the way."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"{folder}: cannot make this folder, a file is in the way") from None
    except OSError as e:
        raise UserError(
            f"{folder}: cannot make this folder ({one_line(e.strerror or e)})"
        ) from None
