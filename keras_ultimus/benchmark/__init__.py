"""Throughput measurements of the training step, used by `ultimus-bench` and the GPU driver."""
