"""CIFAR-10 on disk and the input pipelines (tf.data, NumPy, device) that feed `fit`."""
