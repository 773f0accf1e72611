"""How a split is cut into batches: the one rule the pipelines and the one-cycle step count share; the NumPy
pipeline's default thread count. Imports nothing but `os`."""

import os


def batches_per_epoch(num_images: int, batch_size: int) -> int:
    """Batches in one pass over `num_images`; the last one may be smaller (both pipelines keep it)."""
    return -(-num_images // batch_size)


def default_workers() -> int:
    """Threads for the NumPy pipeline: enough that batches are ready before the model asks, at most 4."""
    return max(1, min(4, (os.cpu_count() or 1) - 1))
