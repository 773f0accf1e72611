"""How a split is cut into batches: the one rule the pipelines and the one-cycle step count share. Imports nothing."""


def batches_per_epoch(num_images: int, batch_size: int) -> int:
    """Batches in one pass over `num_images`; the last one may be smaller (both pipelines keep it)."""
    return -(-num_images // batch_size)
