"""The PyTorch original's published run: its schedule, as `train` flags too, and the test accuracy its log printed."""

# Batch 512 (98 steps an epoch), Adam, one cycle over 24 epochs peaking at 0.0061 after epoch 5: the LR it printed
# at the end of epochs 1-6 was 0.00085, 0.00242, 0.00431, 0.00572, 0.00610, 0.00605.
SCHEDULE = dict(epochs=24, batch_size=512, max_lr=0.0061, pct_start=5 / 24)
TRAIN_FLAGS = [
    token for key, value in SCHEDULE.items() for token in (f"--{key.replace('_', '-')}", str(value))
]
PUBLISHED_TEST_ACCURACY = {
    1: 0.5346,
    4: 0.0821,
    24: 0.4121,
}  # epoch (counted from 1) -> test accuracy
