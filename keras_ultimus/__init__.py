"""Keras 3 multi-backend Ultimus CIFAR-10 classifier.

Importing the package registers its Keras serializables (`UltimusLayer`,
`OneCycle`, the smoothed loss and the loss-scale optimizer) with Keras, so
`keras.saving.load_model` finds them, as for any Keras extension. It does so
without starting Keras itself: if Keras is already imported, they register at
once; if not, they register the moment Keras is imported. A CLI can so set
the process up (`keras_ultimus.backend.prepare`: backend check, log levels,
devices) before Keras starts.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__version__ = "0.2.0"
__all__ = ["OneCycle", "UltimusLayer", "build_model", "fit", "from_preset", "list_presets"]

_PUBLIC = {"UltimusLayer": "models.layers", "build_model": "models.ultimus", "OneCycle": "training.schedules",
           "fit": "training.fit", "from_preset": "serving.presets", "list_presets": "serving.presets"}
# The modules whose import registers a Keras serializable.
_SERIALIZABLES = ("keras_ultimus.models.layers", "keras_ultimus.training.schedules", "keras_ultimus.training.losses",
                  "keras_ultimus.training.compiling")


def __getattr__(name: str):
    if name in _PUBLIC:
        from keras_ultimus.backend import quiet_keras_start

        with quiet_keras_start():  # TensorFlow's C++ start-up lines (a cuInit "error" among them) are noise here
            return getattr(importlib.import_module(f"keras_ultimus.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module 'keras_ultimus' has no attribute {name!r}")


def _register() -> None:
    """Import the modules that register the package's serializables with Keras.

    A module already importing (it may be what imported Keras) registers itself when it finishes.
    """
    for module in _SERIALIZABLES:
        if module not in sys.modules:
            importlib.import_module(module)


class _RegisterAfterKeras(importlib.abc.MetaPathFinder):
    """Registers the serializables right after `import keras` finishes executing Keras, whoever imports it.

    Only an executed import counts: `importlib.util.find_spec("keras")` (TensorFlow calls it) leaves it waiting.
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        spec = next((found for finder in sys.meta_path if finder is not self and hasattr(finder, "find_spec")
                     and (found := finder.find_spec(fullname, path, target)) is not None), None)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            try:
                _register()
            except Exception as e:  # noqa: BLE001  registration must never break `import keras`
                warnings.warn(f"keras_ultimus could not register its Keras objects: {e}", stacklevel=2)

        spec.loader.exec_module = exec_then_register
        return spec


if "keras" in sys.modules:
    _register()
elif not any(isinstance(finder, _RegisterAfterKeras) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterKeras())
