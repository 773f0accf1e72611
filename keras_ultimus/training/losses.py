"""Cross-entropy on integer labels with label smoothing, which Keras' sparse loss lacks before 3.16."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_ultimus")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy of logits against one-hot integer labels smoothed by `label_smoothing`.

    Args:
        label_smoothing: float. Each one-hot target becomes
            `(1 - label_smoothing) * one_hot + label_smoothing / num_classes`.
            Defaults to `0.1`.
        **kwargs: other keyword arguments of `keras.losses.Loss`.
    """

    def __init__(
        self, label_smoothing: float = 0.1, name: str = "smoothed_sparse_crossentropy", **kwargs
    ):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        one_hot = ops.one_hot(ops.reshape(ops.cast(y_true, "int32"), (-1,)), ops.shape(y_pred)[-1])
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, from_logits=True, label_smoothing=self.label_smoothing
        )

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}
