"""The Ultimus attention block."""

import math

import keras
from keras import ops

# ATTENTION: how the attention map is formed (see `UltimusLayer`); "sample" is the reference.
from keras_ultimus.constants import ATTENTION


@keras.saving.register_keras_serializable(package="keras_ultimus")
class UltimusLayer(keras.layers.Layer):
    """Per-sample attention over the entries of a projected feature vector.

    Each sample's features are projected to `key_dim`-dim vectors `q`, `k`
    and `v`. Their outer product `q ⊗ k` gives a `key_dim × key_dim`
    attention map per sample, softmaxed over its last axis, and
    `z = v · AM` is projected back to the input width. Samples never mix.
    The map is always computed in float32, so under a mixed-precision policy
    only the four projections run in the low-precision compute dtype.

    Args:
        key_dim: int. Size of the q, k and v projections. Defaults to `8`.
        scale: str. `"pre"` scales the scores by `1/sqrt(key_dim)` before the
            softmax; `"post"` divides the softmax output instead, as the
            original assignment text words it. Defaults to `"pre"`.
        residual: bool. If `True`, return `inputs + block(inputs)`.
            Defaults to `False`.
        attention: str. `"sample"`: each sample's `key_dim x key_dim` map
            `softmax(q ⊗ k)`, then `z = v · AM` (the reference). `"batch"`:
            one map `softmax(Qᵀ K)` over the whole batch, then `Z = V · AM`,
            which mixes samples. `"elementwise"`: `softmax(q * k)` over the
            `key_dim` entries of each sample, then `z = v * AM`. The last two
            are the two readings of the original PyTorch code's printed
            summary; all three have the same weights. Defaults to `"sample"`.
        kernel_initializer: initializer for the four Dense kernels.
            Defaults to `"glorot_uniform"`.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`,
            including `name` and `dtype`.

    Call arguments:
        inputs: tensor of shape `(batch, features)`.
        return_attention_scores: bool. If `True`, also return the float32
            attention maps: shape `(batch, key_dim, key_dim)`, or
            `(key_dim, key_dim)` for `"batch"` and `(batch, key_dim)` for
            `"elementwise"` attention.

    Example:

    ```python
    inputs = keras.Input(shape=(48,))
    outputs = UltimusLayer(key_dim=8)(inputs)
    model = keras.Model(inputs, outputs)
    model(np.random.rand(2, 48))  # shape (2, 48)

    # The per-sample attention maps, e.g. for a report:
    outputs, scores = UltimusLayer(key_dim=8)(inputs, return_attention_scores=True)
    keras.Model(inputs, scores)(np.random.rand(2, 48))  # shape (2, 8, 8)
    ```

    References:
        The "Ultimus" block of the TSAI EVA assignment (per-sample variant).
    """

    def __init__(
        self,
        key_dim: int = 8,
        scale: str = "pre",
        residual: bool = False,
        attention: str = "sample",
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if scale not in ("pre", "post"):
            raise ValueError(f"`scale` must be 'pre' or 'post', got {scale!r}.")
        if attention not in ATTENTION:
            raise ValueError(f"`attention` must be one of {ATTENTION}, got {attention!r}.")
        if key_dim < 1:
            raise ValueError(f"`key_dim` must be positive, got {key_dim}.")
        self.key_dim = key_dim
        self.scale = scale
        self.residual = residual
        self.attention = attention
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(
                f"UltimusLayer expects input of shape (batch, features), got {input_shape}."
            )
        features = input_shape[-1]

        def dense(units, name):
            initializer = self.kernel_initializer.__class__.from_config(
                self.kernel_initializer.get_config()
            )
            return keras.layers.Dense(
                units,
                kernel_initializer=initializer,
                dtype=self.dtype_policy,
                name=name,
            )

        self.query_dense = dense(self.key_dim, "query")
        self.key_dense = dense(self.key_dim, "key")
        self.value_dense = dense(self.key_dim, "value")
        self.output_dense = dense(features, "output")
        for layer in (self.query_dense, self.key_dense, self.value_dense):
            layer.build(input_shape)
        self.output_dense.build((input_shape[0], self.key_dim))
        self.built = True

    def call(self, inputs, return_attention_scores=False):
        q = self.query_dense(inputs)
        k = self.key_dense(inputs)
        v = self.value_dense(inputs)
        # The map is computed in float32 under any policy: a float16 or bfloat16
        # softmax loses the small probabilities that the attention is made of.
        q, k = ops.cast(q, "float32"), ops.cast(k, "float32")
        if self.attention == "sample":
            scores = q[:, :, None] * k[:, None, :]  # scores[b, i, j] = q[b, i] * k[b, j]
        elif self.attention == "batch":
            scores = ops.matmul(
                ops.transpose(q), k
            )  # scores[i, j] = sum over the batch of q[b, i] * k[b, j]
        else:
            scores = q * k
        norm = math.sqrt(self.key_dim)
        if self.scale == "pre":
            attention = ops.softmax(scores / norm, axis=-1)
        else:
            attention = ops.softmax(scores, axis=-1) / norm
        weights = ops.cast(attention, v.dtype)
        if self.attention == "sample":
            z = ops.einsum("bi,bij->bj", v, weights)
        elif self.attention == "batch":
            z = ops.matmul(v, weights)
        else:
            z = v * weights
        outputs = self.output_dense(z)
        if self.residual:
            outputs = inputs + outputs
        if return_attention_scores:
            return outputs, attention
        return outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_output_spec(self, inputs, return_attention_scores=False):
        outputs = keras.KerasTensor(
            self.compute_output_shape(inputs.shape), dtype=self.compute_dtype
        )
        if return_attention_scores:
            batch, n = inputs.shape[0], self.key_dim
            scores_shape = {"sample": (batch, n, n), "batch": (n, n), "elementwise": (batch, n)}[
                self.attention
            ]
            return outputs, keras.KerasTensor(scores_shape, dtype="float32")
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "key_dim": self.key_dim,
                "scale": self.scale,
                "residual": self.residual,
                "attention": self.attention,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config
