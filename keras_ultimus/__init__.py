"""Keras 3 multi-backend Ultimus CIFAR-10 classifier."""

from keras_ultimus.backend import check_backend

check_backend()  # before Keras is imported: Keras fails on a bad backend with a traceback

from keras_ultimus.layers import UltimusLayer  # noqa: E402
from keras_ultimus.model import build_model  # noqa: E402
from keras_ultimus.schedules import OneCycle  # noqa: E402

__all__ = ["OneCycle", "UltimusLayer", "build_model"]
