"""Keep torch.compile's trace of a Keras train step whole: stand-ins for the helper calls it can't trace.

Under `jit_compile=True` on torch, Keras compiles its train step with
`torch.compile`. Three calls on Keras' layer path stop the trace (a graph
break), so the step runs as many small compiled pieces with eager code
between them, no faster than eager:
- every layer call asks whether it runs inside a TensorFlow graph, which calls
  `tf.executing_eagerly()` whenever TensorFlow is imported (it always is once
  `keras.utils.set_random_seed` or a tf.data pipeline has run), and torch's
  compiler never traces into TensorFlow;
- preprocessing layers (`Normalization`) reach the backend through
  `importlib.import_module`, which torch's compiler doesn't trace either;
- `keras.ops.max` (`GlobalMaxPooling2D`) asks whether its result has a
  `values` attribute, which the compiler can't decide for a tensor.
`torch.compiler.substitute_in_graph` gives the compiler a traceable stand-in
for each, with the same answer: a torch train step never runs in a TensorFlow
graph, the modules asked for are already imported, and a max over axes is
`keras.ops.amax`. Eager code keeps calling the originals.
"""

import builtins
import functools
import sys
import warnings


def _executing_eagerly() -> bool:
    return True


def _import_module(name, package=None):
    module = sys.modules.get(name)
    if module is None or name.startswith("."):
        # Not imported yet, or relative: the real import (the compiler breaks the graph here, as before).
        import importlib.util

        return builtins.__import__(importlib.util.resolve_name(name, package), fromlist=["_"])
    return module


def _max(x, axis=None, keepdims=False, initial=None):
    import keras

    result = keras.ops.amax(x, axis=axis, keepdims=keepdims)
    return result if initial is None else keras.ops.maximum(result, initial)


@functools.cache
def _substitute_keras_calls() -> None:
    import importlib

    import keras
    import torch

    # Keras' dtype rules are cached functions; tracing through the cache is right, and the warning noise.
    warnings.filterwarnings(
        "ignore", "Dynamo detected a call to a `functools.lru_cache`-wrapped function", UserWarning
    )
    torch.compiler.substitute_in_graph(importlib.import_module)(_import_module)
    torch.compiler.substitute_in_graph(keras.ops.max)(_max)


@functools.cache
def _substitute_tensorflow_calls() -> None:
    import torch

    torch.compiler.substitute_in_graph(sys.modules["tensorflow"].executing_eagerly)(
        _executing_eagerly
    )


def keep_train_step_whole() -> None:
    """Register the stand-ins with torch's compiler, once per process (the TensorFlow one once it is imported)."""
    _substitute_keras_calls()
    if "tensorflow" in sys.modules:
        _substitute_tensorflow_calls()
