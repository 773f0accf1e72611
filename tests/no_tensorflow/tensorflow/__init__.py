"""A stub that makes `import tensorflow` fail: put `tests/no_tensorflow` first on PYTHONPATH to test TF-free paths."""

raise ImportError("TensorFlow is made unimportable by tests/no_tensorflow (a test stub)")
