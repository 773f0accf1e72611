"""CIFAR-10 on disk and the input pipelines (tf.data, NumPy) that feed `fit`."""
