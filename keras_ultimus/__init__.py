"""Keras 3 multi-backend Ultimus CIFAR-10 classifier.

Importing the package checks the Keras backend (a missing or unknown one is
refused in one line, before Keras starts), quiets TensorFlow's C++ start-up
logs, then imports Keras and the modules whose classes register themselves
with `keras.saving.register_keras_serializable`, as keras-hub does: after
`import keras_ultimus`, `keras.saving.load_model` finds `UltimusLayer`,
`OneCycle`, the smoothed loss and the loss-scale optimizer. A library user's
import is quiet too; with KERAS_BACKEND unset and the configured backend
missing, an installed backend is used, with a one-line note.
`list_presets` and `from_preset` give the pretrained models shipped inside.
"""

__version__ = "0.2.0"
__all__ = ["OneCycle", "UltimusLayer", "build_model", "fit", "from_preset", "list_presets"]

from keras_ultimus import backend as _backend

_backend.configure()

import keras  # noqa: E402, F401  after the backend check, so a bad backend is one line

from keras_ultimus.models import batch_normalization as _bn  # noqa: E402, F401  register
from keras_ultimus.models import conv2d as _conv  # noqa: E402, F401  register
from keras_ultimus.models.layers import UltimusLayer  # noqa: E402  registers UltimusLayer
from keras_ultimus.models.ultimus import build_model  # noqa: E402
from keras_ultimus.serving.presets import from_preset, list_presets  # noqa: E402
from keras_ultimus.training import compiling as _compiling  # noqa: E402, F401  registers LossScaleOptimizer
from keras_ultimus.training import losses as _losses  # noqa: E402, F401  registers the smoothed loss
from keras_ultimus.training.fit import fit  # noqa: E402
from keras_ultimus.training.schedules import OneCycle  # noqa: E402  registers OneCycle
