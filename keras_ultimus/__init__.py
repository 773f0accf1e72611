"""Keras 3 multi-backend Ultimus CIFAR-10 classifier.

Importing the package imports no Keras, so a CLI can set up the process
(`keras_ultimus.backend.prepare`: backend check, log levels, devices) first.
The public names load Keras on first use.
"""

__version__ = "0.2.0"
__all__ = ["OneCycle", "UltimusLayer", "build_model"]

_PUBLIC = {"UltimusLayer": "layers", "build_model": "model", "OneCycle": "schedules"}


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(f"keras_ultimus.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module 'keras_ultimus' has no attribute {name!r}")
